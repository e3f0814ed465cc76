"""audit pages: index each log by a page's position (time, id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 19:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_audit_log_mandate_id_at", table_name="audit_log")
    op.create_index(
        "ix_audit_log_mandate_id_at_audit_id", "audit_log", ["mandate_id", "at", "audit_id"]
    )
    op.create_index("ix_platform_audit_log_at_audit_id", "platform_audit_log", ["at", "audit_id"])


def downgrade() -> None:
    op.drop_index("ix_platform_audit_log_at_audit_id", table_name="platform_audit_log")
    op.drop_index("ix_audit_log_mandate_id_at_audit_id", table_name="audit_log")
    op.create_index("ix_audit_log_mandate_id_at", "audit_log", ["mandate_id", "at"])
