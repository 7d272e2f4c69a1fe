//! The record format of MirrorMaker 2's checkpoints topic, bytes only (no I/O).
//!
//! MM2's MirrorCheckpointTask writes one record per (group, partition) to
//! `<source alias>.checkpoints.internal` on the target, and connect-mirror-client's
//! `RemoteClusterUtils.translateOffsets` reads them back, so kferry writes the same records
//! for Java tooling that already uses that API. The format is Kafka's internal `Schema`
//! encoding (big-endian integers, strings as an int16 byte length then UTF-8):
//!
//! - key: `group: string, topic: string, partition: int32`, where `topic` is the topic's name
//!   on the TARGET (MM2 renames it with its replication policy before writing);
//! - value: a header `version: int16` (0, the only version), then
//!   `upstreamOffset: int64, offset: int64, metadata: string`.
//!
//! Where the records go, how they are produced, and which offsets they carry is left to the
//! group sync loop; this module only turns a [`Checkpoint`] into bytes and back.

use thiserror::Error;

/// The only value format version MM2 has (`Checkpoint.VERSION`).
const VERSION: i16 = 0;

/// The partition of the checkpoints topic readers look at. MM2 creates the topic with one
/// partition, and `MirrorClient.remoteConsumerOffsets` reads only partition 0.
pub const CHECKPOINTS_PARTITION: i32 = 0;

/// The checkpoints topic for a source cluster alias, as both of MM2's replication policies
/// (DefaultReplicationPolicy and IdentityReplicationPolicy) name it with their default
/// settings. MM2 creates it compacted with one partition; the newest record of each key wins.
///
/// MM2 with a custom `replication.policy.separator` uses that separator here too
/// (`<alias>_checkpoints_internal`), unless `replication.policy.internal.topic.separator.enabled`
/// is false; the `.` form is what a Java reader with the default policy settings looks for.
pub fn checkpoints_topic(source_alias: &str) -> String {
    format!("{source_alias}.checkpoints.internal")
}

/// Where a group stands on one partition, on both clusters: one checkpoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The consumer group id (the same on both clusters).
    pub group: String,
    /// The topic's name on the target cluster: readers look the partition up under it.
    pub topic: String,
    /// The partition (the same number on both clusters).
    pub partition: i32,
    /// The group's committed offset on the source.
    pub upstream_offset: i64,
    /// The offset on the target where the group continues: what readers commit or seek to.
    pub downstream_offset: i64,
    /// The metadata string the group committed with its offset on the source.
    pub metadata: String,
}

/// Which half of a checkpoint record a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordPart {
    Key,
    Value,
}

impl std::fmt::Display for RecordPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Key => "key",
            Self::Value => "value",
        })
    }
}

/// A checkpoint that cannot be encoded, or bytes that are not a checkpoint record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("checkpoint field `{field}` is {length} bytes of UTF-8; MM2's format holds at most 32767")]
    StringTooLong { field: &'static str, length: usize },
    #[error("checkpoint {part} ends inside field `{field}`: it needs {needed} bytes, {available} are left")]
    Truncated { part: RecordPart, field: &'static str, needed: usize, available: usize },
    #[error("checkpoint {part} field `{field}` has a negative length ({length})")]
    NegativeLength { part: RecordPart, field: &'static str, length: i16 },
    #[error("checkpoint {part} field `{field}` is not valid UTF-8")]
    InvalidUtf8 { part: RecordPart, field: &'static str },
    #[error("checkpoint value has version {version}; only version 0 exists")]
    UnsupportedVersion { version: i16 },
    #[error("checkpoint {part} has {count} bytes after its last field")]
    TrailingBytes { part: RecordPart, count: usize },
}

impl Checkpoint {
    /// The record (key, value) MM2 would write for this checkpoint. Fails only for a string
    /// longer than the format can hold (e.g. a huge committed metadata string).
    pub fn encode(&self) -> Result<(Vec<u8>, Vec<u8>), CheckpointError> {
        let mut key = Vec::with_capacity(2 + self.group.len() + 2 + self.topic.len() + 4);
        put_string(&mut key, "group", &self.group)?;
        put_string(&mut key, "topic", &self.topic)?;
        key.extend_from_slice(&self.partition.to_be_bytes());

        let mut value = Vec::with_capacity(2 + 8 + 8 + 2 + self.metadata.len());
        value.extend_from_slice(&VERSION.to_be_bytes());
        value.extend_from_slice(&self.upstream_offset.to_be_bytes());
        value.extend_from_slice(&self.downstream_offset.to_be_bytes());
        put_string(&mut value, "metadata", &self.metadata)?;
        Ok((key, value))
    }

    /// A checkpoint record's key and value back into a [`Checkpoint`]. Stricter than MM2's
    /// reader, which ignores trailing bytes and does not check the version: a record kferry
    /// cannot account for byte by byte is reported rather than half-read.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let mut key = Reader { bytes: key, part: RecordPart::Key };
        let group = key.string("group")?;
        let topic = key.string("topic")?;
        let partition = i32::from_be_bytes(key.array("partition")?);
        key.finish()?;

        let mut value = Reader { bytes: value, part: RecordPart::Value };
        let version = i16::from_be_bytes(value.array("version")?);
        if version != VERSION {
            return Err(CheckpointError::UnsupportedVersion { version });
        }
        let upstream_offset = i64::from_be_bytes(value.array("upstreamOffset")?);
        let downstream_offset = i64::from_be_bytes(value.array("offset")?);
        let metadata = value.string("metadata")?;
        value.finish()?;

        Ok(Checkpoint { group, topic, partition, upstream_offset, downstream_offset, metadata })
    }
}

/// Kafka's `Type.STRING`: an int16 byte length (so at most 32767 bytes), then UTF-8.
fn put_string(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), CheckpointError> {
    let length = i16::try_from(s.len()).map_err(|_| CheckpointError::StringTooLong { field, length: s.len() })?;
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Reads fields front to back, naming the field and record part in every error.
struct Reader<'a> {
    bytes: &'a [u8],
    part: RecordPart,
}

impl Reader<'_> {
    fn take(&mut self, field: &'static str, needed: usize) -> Result<&[u8], CheckpointError> {
        if self.bytes.len() < needed {
            return Err(CheckpointError::Truncated { part: self.part, field, needed, available: self.bytes.len() });
        }
        let (head, rest) = self.bytes.split_at(needed);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CheckpointError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    fn string(&mut self, field: &'static str) -> Result<String, CheckpointError> {
        let length = i16::from_be_bytes(self.array(field)?);
        let length =
            usize::try_from(length).map_err(|_| CheckpointError::NegativeLength { part: self.part, field, length })?;
        let part = self.part;
        let bytes = self.take(field, length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CheckpointError::InvalidUtf8 { part, field })
    }

    fn finish(self) -> Result<(), CheckpointError> {
        match self.bytes.len() {
            0 => Ok(()),
            count => Err(CheckpointError::TrailingBytes { part: self.part, count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            group: "orders-app".into(),
            topic: "primary.orders".into(),
            partition: 3,
            upstream_offset: 1234,
            downstream_offset: 1200,
            metadata: "meta".into(),
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // Produced once with Kafka's own serializer: protocol-tests/verify/mirror-client/
    // CheckpointVectors.java calls connect-mirror-client 4.3.1's Checkpoint.recordKey() and
    // recordValue() (what MirrorCheckpointTask writes) and prints them as hex.
    const JAVA_VECTORS: [(&str, &str); 2] = [
        (
            "000a6f72646572732d617070000e7072696d6172792e6f726465727300000003",
            "000000000000000004d200000000000004b000046d657461",
        ),
        ("00096772757070652dc3bc00017400000000", "00007fffffffffffffff00000000000000000000"),
    ];

    fn java_checkpoints() -> [Checkpoint; 2] {
        [
            sample(),
            Checkpoint {
                group: "gruppe-\u{fc}".into(),
                topic: "t".into(),
                partition: 0,
                upstream_offset: i64::MAX,
                downstream_offset: 0,
                metadata: String::new(),
            },
        ]
    }

    #[test]
    fn encodes_byte_for_byte_like_mirror_client() {
        for (checkpoint, (key, value)) in java_checkpoints().iter().zip(JAVA_VECTORS) {
            assert_eq!(checkpoint.encode().unwrap(), (hex(key), hex(value)), "{checkpoint:?}");
        }
    }

    #[test]
    fn decodes_mirror_client_bytes() {
        for (checkpoint, (key, value)) in java_checkpoints().iter().zip(JAVA_VECTORS) {
            assert_eq!(&Checkpoint::decode(&hex(key), &hex(value)).unwrap(), checkpoint);
        }
    }

    #[test]
    fn round_trips_extremes() {
        let long = "x".repeat(i16::MAX as usize);
        for checkpoint in [
            Checkpoint { partition: i32::MAX, upstream_offset: -1, downstream_offset: i64::MIN, ..sample() },
            Checkpoint { group: String::new(), topic: "\u{1F980}.t".into(), metadata: long.clone(), ..sample() },
            Checkpoint { group: long.clone(), topic: long, partition: -1, ..sample() },
        ] {
            let (key, value) = checkpoint.encode().unwrap();
            assert_eq!(Checkpoint::decode(&key, &value).unwrap(), checkpoint);
        }
    }

    #[test]
    fn refuses_strings_longer_than_the_format_holds() {
        let checkpoint = Checkpoint { metadata: "m".repeat(32768), ..sample() };
        assert_eq!(checkpoint.encode(), Err(CheckpointError::StringTooLong { field: "metadata", length: 32768 }));
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let (key, value) = sample().encode().unwrap();
        for len in 0..key.len() {
            let err = Checkpoint::decode(&key[..len], &value).unwrap_err();
            assert!(matches!(err, CheckpointError::Truncated { part: RecordPart::Key, .. }), "{len}: {err}");
        }
        for len in 0..value.len() {
            let err = Checkpoint::decode(&key, &value[..len]).unwrap_err();
            assert!(matches!(err, CheckpointError::Truncated { part: RecordPart::Value, .. }), "{len}: {err}");
        }
        assert_eq!(
            Checkpoint::decode(&key[..4], &value).unwrap_err().to_string(),
            "checkpoint key ends inside field `group`: it needs 10 bytes, 2 are left"
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let (key, value) = sample().encode().unwrap();
        let mut bad_version = value.clone();
        bad_version[1] = 1;
        assert_eq!(Checkpoint::decode(&key, &bad_version), Err(CheckpointError::UnsupportedVersion { version: 1 }));

        let mut negative = key.clone();
        negative[..2].copy_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(
            Checkpoint::decode(&negative, &value),
            Err(CheckpointError::NegativeLength { part: RecordPart::Key, field: "group", length: -1 })
        );

        let mut not_utf8 = value.clone();
        let last = not_utf8.len() - 1;
        not_utf8[last] = 0xff;
        assert_eq!(
            Checkpoint::decode(&key, &not_utf8),
            Err(CheckpointError::InvalidUtf8 { part: RecordPart::Value, field: "metadata" })
        );

        let mut trailing = key.clone();
        trailing.push(0);
        assert_eq!(
            Checkpoint::decode(&trailing, &value),
            Err(CheckpointError::TrailingBytes { part: RecordPart::Key, count: 1 })
        );
    }

    #[test]
    fn topic_name_matches_mm2_policies() {
        assert_eq!(checkpoints_topic("primary"), "primary.checkpoints.internal");
    }
}
