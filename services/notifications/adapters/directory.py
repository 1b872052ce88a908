"""Who receives a cell's notices.

The walking skeleton addresses each cell's shared mailbox by a configurable pattern;
the member and official directory replaces it when the organisation becomes data.
"""

from __future__ import annotations

from shared.contract import DomainEvent, MeetingScheduled


class MailboxPatternDirectory:
    def __init__(self, cell_mailbox_pattern: str) -> None:
        self._pattern = cell_mailbox_pattern

    def recipients(self, event: DomainEvent) -> list[str]:
        if isinstance(event, MeetingScheduled):
            return [self._pattern.format(cell_id=event.cell_id, ward_id=event.ward_id)]
        return []
