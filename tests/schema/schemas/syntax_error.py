from models.releases import V
from models.schema import Release

DECLARATIONS = (
    Release(V("11.2") after=V("11.1")),
)
