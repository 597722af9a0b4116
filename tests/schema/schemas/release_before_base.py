from models.releases import V
from models.schema import Release

DECLARATIONS = (
    Release(V("11.0"), after=V("10.2")),
    Release(V("10.1"), after=V("11.0")),
)
