from palmsweb.profiles import current_profile, member_profiles
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


def profiles(request) -> dict:
    """The profile switcher of the navigation bar: the user's profiles and the active one."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    # Callables: the template calls them only where it shows the switcher (a polled htmx
    # fragment does not), and the request caches what they read.
    return {
        "active_profile": lambda: current_profile(request),
        "my_profiles": lambda: member_profiles(request),
    }
