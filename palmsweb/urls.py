from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from palmsweb import profile_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", views.account, name="account"),
    path("accounts/tokens/new/", views.token_create, name="token-create"),
    path("accounts/tokens/revoke/", views.token_revoke, name="token-revoke"),
    path("profiles/", profile_views.profile_list, name="profile-index"),
    path("profiles/new/", profile_views.profile_create, name="profile-new"),
    path("profiles/switch/", profile_views.profile_switch, name="profile-switch"),
    path("profiles/<int:pk>/", profile_views.profile_detail, name="profile-edit"),
    path(
        "profiles/<int:pk>/members/", profile_views.membership_add,
        name="profile-membership-add",
    ),
    path(
        "profiles/members/<int:pk>/remove/", profile_views.membership_remove,
        name="profile-membership-remove",
    ),
    path("admin/", admin.site.urls),
    path("curation/", include("curation.urls")),
    path("training/", include("training.urls")),
    path("evaluation/", include("evaluation.urls")),
    path("api/", include("palmsweb.api_urls")),
    path("api/schema/", views.api_schema, name="api-schema"),
    path("api/docs/", views.api_docs, name="api-docs"),
]

# Role-aware error pages inside the site (Django's own are bare, or debug pages).
handler403 = "palmsweb.views.permission_denied"
handler404 = "palmsweb.views.page_not_found"
