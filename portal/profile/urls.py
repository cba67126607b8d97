from __future__ import annotations

from django.urls import path

from portal.profile import views

app_name = "profile"

urlpatterns = [
    path("", views.profile, name="index"),
    path("tokens/", views.create_token, name="token-create"),
    path("tokens/<str:prefix>/revoke/", views.revoke_token, name="token-revoke"),
    path("sessions/sign-out-others/", views.sign_out_others, name="sign-out-others"),
    path("sessions/<str:session_id>/sign-out/", views.sign_out_session, name="sign-out"),
]
