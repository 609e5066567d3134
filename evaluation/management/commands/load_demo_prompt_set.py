"""Load the 40 PALMS demo evaluation prompts as a locked prompt set (idempotent)."""

from django.core.management.base import BaseCommand

from evaluation.studies.prompt_sets import load_demo_prompt_set


class Command(BaseCommand):
    help = "Load the PALMS demo evaluation prompts (5 per category) as a locked prompt set."

    def handle(self, *args, **options):
        prompt_set = load_demo_prompt_set()
        self.stdout.write(f"{prompt_set.name}: {prompt_set.prompts.count()} prompts (locked).")
