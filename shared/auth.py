"""Who may act where. HTTP callers present a bearer token (JWT, HS256) carrying a role
and an organisation scope; a token acts only on units inside its scope.

Scope levels follow the deployment's ladder: ``cell`` and ``ward`` are matched against
the command's own ids; a higher level (district, province, commune...) covers a ward
when it is one of the ward's ancestors in the organisation tree, which the caller
supplies. ``system`` is an upstream publisher and covers everything it is allowed to
publish. Tokens are secrets: they are never logged.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from shared.contract.types import Identifier

ALGORITHM = "HS256"
ISSUER = "chibo"


class Role(StrEnum):
    MEMBER = "member"
    CELL_SECRETARY = "cell_secretary"
    WARD_OFFICIAL = "ward_official"
    DISTRICT_OFFICIAL = "district_official"
    PROVINCE_OFFICIAL = "province_official"
    SYSTEM_PUBLISHER = "system_publisher"


# Roles allowed to change the record (members read and receive; they do not write).
WRITER_ROLES = frozenset(Role) - {Role.MEMBER}


class Principal(BaseModel):
    model_config = ConfigDict(frozen=True)

    subject: str
    role: Role
    scope_level: str  # "cell", "ward", a higher ladder level, or "system"
    scope_unit: Identifier | None = None

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.subject}"

    def covers(self, ward_id: str, cell_id: str | None, ward_ancestors: frozenset[str]) -> bool:
        if self.scope_level == "system":
            return True
        if self.scope_level == "cell":
            return cell_id is not None and cell_id == self.scope_unit
        if self.scope_level == "ward":
            return ward_id == self.scope_unit
        return self.scope_unit == ward_id or self.scope_unit in ward_ancestors


class AuthError(Exception):
    def __init__(self, code: str, message_vi: str, message_en: str, status: int) -> None:
        super().__init__(message_en)
        self.code = code
        self.message_vi = message_vi
        self.message_en = message_en
        self.status = status


def unauthenticated(reason_en: str) -> AuthError:
    return AuthError(
        "unauthenticated",
        "Thiếu hoặc sai mã xác thực (token).",
        f"Missing or invalid token: {reason_en}.",
        401,
    )


def forbidden_scope() -> AuthError:
    return AuthError(
        "forbidden_scope",
        "Tài khoản không có quyền thao tác trên đơn vị này.",
        "The token's scope does not cover this unit.",
        403,
    )


def forbidden_role() -> AuthError:
    return AuthError(
        "forbidden_role",
        "Vai trò của tài khoản không được phép thực hiện lệnh này.",
        "The token's role may not issue this command.",
        403,
    )


class TokenService:
    def __init__(self, secret: SecretStr) -> None:
        self._secret = secret.get_secret_value()

    def issue(
        self,
        subject: str,
        role: Role,
        scope_level: str,
        scope_unit: str | None,
        ttl: timedelta = timedelta(hours=12),
        now: datetime | None = None,
    ) -> str:
        issued = now or datetime.now(UTC)
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "role": role.value,
            "scope": {"level": scope_level, "unit": scope_unit},
            "iat": int(issued.timestamp()),
            "exp": int((issued + ttl).timestamp()),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "sub", "iss"]},
            )
            scope = claims.get("scope") or {}
            return Principal(
                subject=claims["sub"],
                role=Role(claims["role"]),
                scope_level=scope["level"],
                scope_unit=scope.get("unit"),
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthenticated("expired") from exc
        except (jwt.InvalidTokenError, KeyError, ValueError, TypeError, ValidationError) as exc:
            raise unauthenticated("not a valid token") from exc
