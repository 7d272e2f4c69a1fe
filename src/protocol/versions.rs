//! What a broker's ApiVersions answer says: the version range of each API, the finalized
//! cluster features, and from those the range of Apache Kafka releases the broker can be.
//!
//! Kafka does not send its release number, so `kferry check` infers it from API versions
//! that appeared (or were removed) in known releases. The markers below were checked
//! against real 3.9 and 4.x brokers by the protocol tests.

use std::collections::HashMap;
use std::fmt;

use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;

/// The API versions and features a broker announced.
#[derive(Debug, Clone, Default)]
pub struct ApiVersionTable {
    ranges: HashMap<i16, VersionRange>,
    /// Finalized cluster features (`metadata.version`, `transaction.version`, ...) and their
    /// max version level, from ApiVersions v3+.
    features: HashMap<String, i16>,
}

impl ApiVersionTable {
    pub fn from_response(response: &ApiVersionsResponse) -> Self {
        let ranges = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, VersionRange { min: k.min_version, max: k.max_version }))
            .collect();
        let features = response.finalized_features.iter().map(|f| (f.name.to_string(), f.max_version_level)).collect();
        Self { ranges, features }
    }

    /// The versions the broker supports for `key`, if it supports the API at all.
    pub fn range(&self, key: ApiKey) -> Option<VersionRange> {
        self.ranges.get(&(key as i16)).copied()
    }

    /// A finalized feature's level, e.g. `transaction.version`.
    pub fn feature(&self, name: &str) -> Option<i16> {
        self.features.get(name).copied()
    }

    fn supports(&self, key: ApiKey, version: i16) -> bool {
        self.range(key).is_some_and(|r| r.min <= version && version <= r.max)
    }

    /// The Kafka releases consistent with these API versions.
    pub fn kafka_releases(&self) -> ReleaseRange {
        let mut range = ReleaseRange { at_least: None, before: None };
        for marker in MARKERS {
            let present = (marker.test)(self);
            if present {
                range.at_least = range.at_least.max(Some(marker.since));
            } else if range.before.is_none_or(|before| marker.since < before) {
                range.before = Some(marker.since);
            }
        }
        range
    }
}

/// A Kafka release as (major, minor).
pub type Release = (u8, u8);

/// Releases a broker can be: `at_least <= release < before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseRange {
    pub at_least: Option<Release>,
    pub before: Option<Release>,
}

impl fmt::Display for ReleaseRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.at_least, self.before) {
            (Some((a, b)), Some((c, d))) => write!(f, ">= {a}.{b}, < {c}.{d}"),
            (Some((a, b)), None) => write!(f, ">= {a}.{b}"),
            (None, Some((c, d))) => write!(f, "< {c}.{d}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// A fact about API versions that holds from one Kafka release on.
struct Marker {
    since: Release,
    test: fn(&ApiVersionTable) -> bool,
}

const MARKERS: &[Marker] = &[
    // Flexible versions (KIP-482) of Produce and ApiVersions v3.
    Marker { since: (2, 4), test: |t| t.supports(ApiKey::ApiVersions, 3) },
    // DescribeCluster (KIP-700).
    Marker { since: (2, 8), test: |t| t.range(ApiKey::DescribeCluster).is_some() },
    // Fetch by topic id (KIP-516).
    Marker { since: (3, 1), test: |t| t.supports(ApiKey::Fetch, 13) },
    // DescribeTopicPartitions (KIP-966).
    Marker { since: (3, 8), test: |t| t.range(ApiKey::DescribeTopicPartitions).is_some() },
    // KIP-896 removed Fetch v0-3 (Produce v0-2 were kept for old clients).
    Marker { since: (4, 0), test: |t| t.range(ApiKey::Fetch).is_some_and(|r| r.min >= 4) },
    // Produce by topic id (KIP-516).
    Marker { since: (4, 1), test: |t| t.supports(ApiKey::Produce, 13) },
];
