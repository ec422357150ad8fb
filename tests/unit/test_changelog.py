"""The per-batch "caused by an uncommitted event" filter used by recovery and standbys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trio_tables._changelog import (
    SOURCE_HEADER,
    SourceOffset,
    caused_by_uncommitted_event,
    committed_records,
    encode_source,
)
from trio_tables._transport._base import TP, Record

topics = st.sampled_from(["words", "clicks", "a.b-c_d"])
committed_maps = st.dictionaries(
    st.builds(TP, topics, st.integers(0, 3)), st.none() | st.integers(0, 50), max_size=6
)
headers = st.one_of(
    st.just(()),
    st.builds(
        lambda t, p, o: ((SOURCE_HEADER, encode_source(SourceOffset(t, p, o))),),
        topics,
        st.integers(0, 3),
        st.integers(0, 60),
    ),
    st.builds(
        lambda t, p, o: (("other", b"x"), (SOURCE_HEADER, encode_source(SourceOffset(t, p, o)))),
        topics,
        st.integers(0, 3),
        st.integers(0, 60),
    ),
)


@given(committed_maps, st.lists(headers, max_size=10))
def test_the_batch_filter_agrees_with_the_per_record_check(
    committed: dict[TP, int | None], all_headers: list[tuple[tuple[str, bytes], ...]]
) -> None:
    records = [
        Record("t-changelog", 0, i, b"k", b"1", 0, record_headers)
        for i, record_headers in enumerate(all_headers)
    ]
    assert committed_records(records, committed) == [
        record for record in records if not caused_by_uncommitted_event(record, committed)
    ]
