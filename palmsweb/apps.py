from django.apps import AppConfig


class PalmswebConfig(AppConfig):
    name = "palmsweb"
    verbose_name = "palmsweb"
