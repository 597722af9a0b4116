from models.releases import V
from models.schema import Release

DECLARATIONS = (
    Release(V("11.2"), after=V("11.1")),
    Release(V("11.0"), after=V("11.2")),
)
