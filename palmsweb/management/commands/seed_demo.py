"""Prepare the embedded mode: the "PALMS demo" value profile with the PALMS categories,
demo accounts (members of that profile) and demo content."""

from __future__ import annotations

import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from curation.demo import demo_profile, load_demo_content, load_demo_validation
from curation.services import load_palms_preset
from evaluation.studies.prompt_sets import load_demo_prompt_set
from palmsweb.roles import Role, ensure_role_groups, grant_role
from training.services import base_model_register_default

DEMO_ACCOUNTS = [
    ("admin", Role.ADMIN),
    ("curator", Role.CURATOR),
    ("curator2", Role.CURATOR),
    ("curator3", Role.CURATOR),
    ("rater1", Role.RATER),
    ("rater2", Role.RATER),
    ("rater3", Role.RATER),
    ("researcher", Role.RESEARCHER),
]


class Command(BaseCommand):
    help = "Create roles, the PALMS categories, the default base model, demo accounts and datasets."

    def add_arguments(self, parser):
        parser.add_argument("--no-accounts", action="store_true", help="Skip demo accounts.")
        parser.add_argument("--no-content", action="store_true", help="Skip demo datasets.")

    def handle(self, *args, **options):
        ensure_role_groups()
        profile = demo_profile()
        self.stdout.write(f"Value profile: {profile.name}")
        created, existing = load_palms_preset(profile=profile)
        self.stdout.write(f"PALMS categories: {created} added, {existing} already there.")
        model = base_model_register_default()
        self.stdout.write(f"Default base model: {model.name} (converted on first use).")
        admin = None
        if not options["no_accounts"]:
            admin = self._demo_accounts()
        if not options["no_content"]:
            loaded = load_demo_content(user=admin) + [load_demo_validation(user=admin)]
            for snapshot in filter(None, loaded):
                self.stdout.write(
                    f"Loaded {snapshot.dataset.name}: {snapshot.sample_count} samples, "
                    f"snapshot {snapshot.short_hash}"
                )
            prompt_set = load_demo_prompt_set()
            count = prompt_set.prompts.count()
            self.stdout.write(f"Evaluation prompts: {prompt_set.name} ({count})")

    def _demo_accounts(self):
        # Demo accounts have known passwords printed to the console: never in production.
        if not settings.EMBEDDED:
            raise CommandError("Demo accounts exist only in embedded mode (no DATABASE_URL).")
        passwords_file = settings.VAR_DIR / "demo-accounts.json"
        passwords = json.loads(passwords_file.read_text()) if passwords_file.exists() else {}
        User = get_user_model()
        for username, role in DEMO_ACCOUNTS:
            user, created = User.objects.get_or_create(username=username)
            if created or username not in passwords:
                passwords[username] = secrets.token_urlsafe(9)
                user.set_password(passwords[username])
            user.is_staff = user.is_superuser = role == Role.ADMIN
            user.save()
            grant_role(user, role, demo_profile())
        passwords_file.parent.mkdir(parents=True, exist_ok=True)
        passwords_file.write_text(json.dumps(passwords, indent=2))
        passwords_file.chmod(0o600)
        self.stdout.write(self.style.SUCCESS("Demo accounts (embedded mode only):"))
        for username, role in DEMO_ACCOUNTS:
            self.stdout.write(f"  {username:<11} {role.value:<11} password: {passwords[username]}")
        return User.objects.get(username="admin")
