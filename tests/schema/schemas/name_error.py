from models.releases import V

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),  # noqa: F821 (the mistake this module is for)
)
