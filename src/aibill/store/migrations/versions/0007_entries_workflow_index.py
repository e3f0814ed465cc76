"""entries: an index for the history of one workflow

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 19:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_entries_mandate_id_workflow_id_posted_at_entry_id",
        "entries",
        ["mandate_id", "workflow_id", "posted_at", "entry_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_entries_mandate_id_workflow_id_posted_at_entry_id", table_name="entries")
