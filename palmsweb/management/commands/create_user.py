"""manage.py create_user USERNAME --role ROLE [--role ROLE] [--password P | --password-stdin]"""

from __future__ import annotations

import secrets
import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from palmsweb.roles import Role, ensure_role_groups


class Command(BaseCommand):
    help = (
        "Create a user with one or more roles (curator, rater, admin, researcher). "
        "The admin role also makes the user staff. Without a password, one is generated "
        "and printed. --update adds roles (and a new password or email) to an existing user."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--role", action="append", dest="roles", default=[], metavar="ROLE",
            choices=[role.value for role in Role],
            help="curator, rater, admin or researcher; repeat for several.",
        )
        password = parser.add_mutually_exclusive_group()
        password.add_argument("--password", help="The password (visible in shell history).")
        password.add_argument(
            "--password-stdin", action="store_true", help="Read the password from stdin."
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
            ensure_role_groups()
            user.groups.add(*Group.objects.filter(name__in=roles))

        held = ", ".join(sorted(user.groups.values_list("name", flat=True))) or "no roles"
        verb = "Updated" if existing else "Created"
        self.stdout.write(self.style.SUCCESS(f"{verb} user {username!r} ({held})."))
        if generated:
            self.stdout.write(f"Password: {password}")
