from palmsweb.roles import Role, has_role


def roles(request) -> dict:
    """Role flags for navigation only; views check permissions themselves."""
    user = request.user
    return {
        "is_curator": has_role(user, Role.CURATOR),
        "is_rater": has_role(user, Role.RATER),
        "is_admin": has_role(user, Role.ADMIN),
        "is_researcher": has_role(user, Role.RESEARCHER),
    }
