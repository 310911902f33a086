"""hourly rollups per room state, with readings not evaluated

``rollup_hourly`` gains ``state`` (in the primary key: one row per monitor, channel, hour and
the state whose limits judged the readings) and ``n_not_evaluated`` (valid readings no limit
applied to). The annual report compares each state's percentiles with that state's limits and
leaves readings not evaluated out of "time within limits" (issue 14 item 7).

Rows written before this revision keep ``state = ''`` (unknown) and ``n_not_evaluated = 0``;
``tracker rollups rebuild --from --to`` recomputes them from the raw readings (audited), and
``tracker rollups verify`` lists the hours still in the old form.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rollup_hourly", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("n_not_evaluated", sa.Integer(), nullable=False, server_default="0"))
        batch_op.drop_constraint("pk_rollup_hourly", type_="primary")
        batch_op.create_primary_key("pk_rollup_hourly", ["monitor_id", "channel", "hour", "state"])


def downgrade() -> None:
    # an hour's states cannot be merged back in SQL (the histograms): the rollups are derived
    # data, so they are emptied here and rebuilt from the raw readings (tracker rollups rebuild)
    op.execute("DELETE FROM rollup_hourly")
    with op.batch_alter_table("rollup_hourly", schema=None) as batch_op:
        batch_op.drop_constraint("pk_rollup_hourly", type_="primary")
        batch_op.create_primary_key("pk_rollup_hourly", ["monitor_id", "channel", "hour"])
        batch_op.drop_column("n_not_evaluated")
        batch_op.drop_column("state")
