from django.apps import AppConfig


class PalmswebConfig(AppConfig):
    name = "palmsweb"
    verbose_name = "palmsweb"

    def ready(self) -> None:
        from palmsweb import checks  # noqa: F401  (registers the system checks)
