"""The admin API (contract §4): resource CRUD, key rotation, OpenAPI document and docs page.

`build_admin_app` is the factory the application wires to the admin listener;
`resource_schemas` backs `aisix schema`. Routes other modules serve (model status, health,
usage) are passed in as `extra_routes` (see `aisix.admin.routing`).
"""

from aisix.admin.app import ADMIN_BODY_LIMIT, build_admin_app
from aisix.admin.openapi import resource_schemas
from aisix.admin.routing import AdminError, AdminRequest, AdminResponse, ExtraRoutes, Handler

__all__ = [
    "ADMIN_BODY_LIMIT",
    "AdminError",
    "AdminRequest",
    "AdminResponse",
    "ExtraRoutes",
    "Handler",
    "build_admin_app",
    "resource_schemas",
]
