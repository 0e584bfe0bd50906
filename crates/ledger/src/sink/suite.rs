//! The checks every sink passes: idempotent writes and each grouping, with exact costs.

use std::str::FromStr;

use rust_decimal::Decimal;

use super::{AggregateQuery, AggregateRow, GroupBy, Sink};
use crate::record::UsageRecord;
use crate::test_support::record;

const DAY1: i64 = 1_714_521_600_000; // 2024-05-01T00:00:00Z
const DAY_MS: i64 = 86_400_000;
const JUNE3: i64 = 1_717_372_800_000; // 2024-06-03T00:00:00Z

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn make(
    id: &str,
    time_ms: i64,
    team: Option<&str>,
    key: &str,
    served: Option<&str>,
    route: Option<&str>,
    cost: &str,
    estimated: bool,
) -> UsageRecord {
    let mut r = record(id, 0);
    r.time_ms = time_ms;
    r.team = team.map(str::to_owned);
    r.key = Some(key.to_owned());
    r.served_model = served.map(str::to_owned);
    r.route = route.map(str::to_owned);
    r.cost = dec(cost);
    r.usage.input_tokens = 100;
    r.usage.output_tokens = 10;
    r.usage.cached_input_tokens = 40;
    r.usage.reasoning_tokens = 5;
    r.usage.estimated = estimated;
    r
}

fn records() -> [UsageRecord; 4] {
    let [mut a, mut b, mut c, mut d] = records_untagged();
    a.user = Some("ann".to_owned());
    b.user = Some("ann".to_owned());
    d.user = Some("bob".to_owned());
    c.tags.clear();
    d.tags = [("feature", "search"), ("env", "prod")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    [a, b, c, d]
}

fn records_untagged() -> [UsageRecord; 4] {
    [
        make(
            "a",
            DAY1 + 1_000,
            Some("billing"),
            "k1",
            Some("gpt-4o-mini"),
            Some("r1"),
            "0.1",
            false,
        ),
        make(
            "b",
            DAY1 + DAY_MS - 1,
            Some("billing"),
            "k2",
            Some("gpt-4o"),
            Some("r1"),
            "0.2",
            true,
        ),
        make(
            "c",
            DAY1 + DAY_MS,
            Some("search"),
            "k3",
            None,
            None,
            "0",
            false,
        ),
        make(
            "d",
            JUNE3,
            None,
            "k1",
            Some("gpt-4o-mini"),
            Some("r2"),
            "1.23456789012345678",
            false,
        ),
    ]
}

fn totals(group: Option<&str>, requests: u64, estimated: u64, cost: &str) -> AggregateRow {
    AggregateRow {
        group: group.map(str::to_owned),
        requests,
        estimated_requests: estimated,
        input_tokens: 100 * requests,
        output_tokens: 10 * requests,
        cached_input_tokens: 40 * requests,
        reasoning_tokens: 5 * requests,
        cost: dec(cost),
    }
}

fn all(by: GroupBy) -> AggregateQuery {
    AggregateQuery {
        by,
        since_ms: None,
        until_ms: None,
    }
}

pub(crate) fn run(sink: &dyn Sink) {
    let [a, b, c, d] = records();
    assert_eq!(sink.write_batch(&[a.clone(), b.clone()]).unwrap(), 2);
    // A replay of a and b alongside new records stores only the new ones.
    assert_eq!(sink.write_batch(&[a, b, c.clone(), d]).unwrap(), 2);
    assert_eq!(sink.write_batch(&[c]).unwrap(), 0);
    assert_eq!(sink.write_batch(&[]).unwrap(), 0);

    assert_eq!(
        sink.aggregate(&all(GroupBy::Team)).unwrap(),
        [
            totals(None, 1, 0, "1.23456789012345678"),
            totals(Some("billing"), 2, 1, "0.3"),
            totals(Some("search"), 1, 0, "0"),
        ]
    );
    assert_eq!(
        sink.aggregate(&all(GroupBy::Key)).unwrap(),
        [
            totals(Some("k1"), 2, 0, "1.33456789012345678"),
            totals(Some("k2"), 1, 1, "0.2"),
            totals(Some("k3"), 1, 0, "0"),
        ]
    );
    assert_eq!(
        sink.aggregate(&all(GroupBy::User)).unwrap(),
        [
            totals(None, 1, 0, "0"),
            totals(Some("ann"), 2, 1, "0.3"),
            totals(Some("bob"), 1, 0, "1.23456789012345678"),
        ]
    );
    assert_eq!(
        sink.aggregate(&all(GroupBy::Model)).unwrap(),
        [
            totals(Some("best-cheap-chat"), 1, 0, "0"),
            totals(Some("gpt-4o"), 1, 1, "0.2"),
            totals(Some("gpt-4o-mini"), 2, 0, "1.33456789012345678"),
        ]
    );
    assert_eq!(
        sink.aggregate(&all(GroupBy::Route)).unwrap(),
        [
            totals(None, 1, 0, "0"),
            totals(Some("r1"), 2, 1, "0.3"),
            totals(Some("r2"), 1, 0, "1.23456789012345678"),
        ]
    );
    assert_eq!(
        sink.aggregate(&all(GroupBy::Day)).unwrap(),
        [
            totals(Some("2024-05-01"), 2, 1, "0.3"),
            totals(Some("2024-05-02"), 1, 0, "0"),
            totals(Some("2024-06-03"), 1, 0, "1.23456789012345678"),
        ]
    );
    assert_eq!(
        sink.aggregate(&all(GroupBy::Month)).unwrap(),
        [
            totals(Some("2024-05"), 3, 1, "0.3"),
            totals(Some("2024-06"), 1, 0, "1.23456789012345678"),
        ]
    );
    // Half-open windows: since is inclusive, until exclusive.
    let window = AggregateQuery {
        by: GroupBy::Team,
        since_ms: Some(DAY1 + DAY_MS - 1),
        until_ms: Some(JUNE3),
    };
    assert_eq!(
        sink.aggregate(&window).unwrap(),
        [
            totals(Some("billing"), 1, 1, "0.2"),
            totals(Some("search"), 1, 0, "0")
        ]
    );
    let empty = AggregateQuery {
        by: GroupBy::Day,
        since_ms: Some(JUNE3 + 1),
        until_ms: None,
    };
    assert_eq!(sink.aggregate(&empty).unwrap(), []);
    // By a tag's value: every record here carries feature=invoices but "c", which has
    // none; "d" has a second tag.
    let by_feature = sink
        .aggregate(&all(GroupBy::Tag("feature".to_owned())))
        .unwrap();
    assert_eq!(
        by_feature,
        [
            totals(None, 1, 0, "0"),
            totals(Some("invoices"), 2, 1, "0.3"),
            totals(Some("search"), 1, 0, "1.23456789012345678"),
        ]
    );
    assert_eq!(
        sink.aggregate(&all(GroupBy::Tag("absent".to_owned())))
            .unwrap(),
        [totals(None, 4, 1, "1.53456789012345678")]
    );

    // A client that sends the same request id twice made two requests: two records.
    // Replaying the second is still a no-op, since rows are keyed by record id.
    let mut retried = records()[0].clone();
    retried.record_id = "a-retried".to_owned();
    assert_eq!(sink.write_batch(&[retried.clone()]).unwrap(), 1);
    assert_eq!(sink.write_batch(&[retried]).unwrap(), 0);
    let by_key = sink.aggregate(&all(GroupBy::Key)).unwrap();
    assert_eq!(by_key[0], totals(Some("k1"), 3, 0, "1.43456789012345678"));
}
