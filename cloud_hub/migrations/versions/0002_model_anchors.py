"""Model anchors: the notary contract, transaction and block under which a model's sha256 is anchored.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 05:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(
            sa.Column(
                "anchor_contract",
                sa.String(length=42),
                nullable=True,
                comment="The notary contract the sha256 is anchored on; null: not anchored.",
            )
        )
        batch.add_column(
            sa.Column(
                "anchor_tx",
                sa.String(length=66),
                nullable=True,
                comment="The anchoring transaction; null when it was anchored by an earlier attempt.",
            )
        )
        batch.add_column(sa.Column("anchor_block", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("anchor_block")
        batch.drop_column("anchor_tx")
        batch.drop_column("anchor_contract")
