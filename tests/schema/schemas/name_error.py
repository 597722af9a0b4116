from models.releases import V

DECLARATIONS = (
    Release(V("11.0"), after=V("10.2")),  # noqa: F821 (the mistake this module is for)
)
