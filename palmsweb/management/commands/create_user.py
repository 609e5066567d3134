"""manage.py create_user USERNAME --role ROLE [--role ROLE] [--profile SLUG]
[--password P | --password-stdin]"""

from __future__ import annotations

import secrets
import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from palmsweb.models import Membership, Profile
from palmsweb.roles import Role, grant_role


class Command(BaseCommand):
    help = (
        "Create a user with one or more roles (curator, rater, admin, researcher). "
        "Curator, rater and researcher are held in one value profile (--profile, the "
        "default profile when left out); admin is site-wide and also makes the user staff. "
        "Without a password, one is generated "
        "and printed. --update adds roles (and a new password or email) to an existing user."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--role",
            action="append",
            dest="roles",
            default=[],
            metavar="ROLE",
            choices=[role.value for role in Role],
            help="curator, rater, admin or researcher; repeat for several.",
        )
        password = parser.add_mutually_exclusive_group()
        password.add_argument("--password", help="The password (visible in shell history).")
        password.add_argument(
            "--password-stdin", action="store_true", help="Read the password from stdin."
        )
        parser.add_argument(
            "--profile",
            default=None,
            metavar="SLUG",
            help="The value profile the roles are held in (default: the default profile).",
        )
        parser.add_argument("--email", default=None)
        parser.add_argument(
            "--update", action="store_true", help="Add roles to an existing user instead."
        )

    def handle(self, *args, username: str, roles: list[str], update: bool, **options):
        User = get_user_model()
        username = username.strip()
        if not username:
            raise CommandError("The username is empty.")
        existing = User.objects.filter(username=username).first()
        if existing and not update:
            raise CommandError(
                f"User {username!r} already exists; use --update to add roles to it."
            )
        if update and not existing:
            raise CommandError(f"User {username!r} does not exist; leave out --update.")
        if not roles and not update:
            raise CommandError("Give at least one --role (curator, rater, admin, researcher).")

        profile = self._profile(options["profile"])
        password = options["password"]
        if options["password_stdin"]:
            password = (options.get("stdin") or sys.stdin).readline().rstrip("\r\n")
            if not password:
                raise CommandError("No password on stdin.")
        generated = password is None and not update
        if generated:
            password = secrets.token_urlsafe(12)

        with transaction.atomic():
            user = existing or User(username=username)
            if options["email"] is not None:
                user.email = options["email"]
            if Role.ADMIN.value in roles:
                # Admins manage everything, the Django admin included.
                user.is_staff = user.is_superuser = True
            if password is not None:
                if not generated:
                    try:
                        validate_password(password, user)
                    except ValidationError as exc:
                        raise CommandError("Password refused: " + " ".join(exc.messages)) from None
                user.set_password(password)
            user.save()
            for role in roles:
                grant_role(user, Role(role), profile)

        held = ", ".join(self._held(user)) or "no roles"
        verb = "Updated" if existing else "Created"
        self.stdout.write(self.style.SUCCESS(f"{verb} user {username!r} ({held})."))
        if generated:
            self.stdout.write(f"Password: {password}")

    def _profile(self, slug: str | None) -> Profile:
        if slug is None:
            return Profile.objects.default()
        profile = Profile.objects.filter(slug=slug).first()
        if profile is None:
            known = ", ".join(Profile.objects.values_list("slug", flat=True))
            raise CommandError(f"No profile {slug!r}; known profiles: {known}.")
        return profile

    def _held(self, user) -> list[str]:
        held = [
            f"{membership.role} in {membership.profile.name}"
            for membership in Membership.objects.filter(user=user).select_related("profile")
        ]
        return (["admin"] if user.is_staff else []) + sorted(held)
