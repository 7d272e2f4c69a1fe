//! Arbitrary bytes as a Fetch response's records blob: the batch view must never panic,
//! must read every header field of whatever it calls a batch, and patching must leave a
//! batch whose CRC verifies and whose records are untouched.
#![no_main]

use bytes::Bytes;
use kferry::protocol::batch::{BatchItem, BatchIter, HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in BatchIter::new(Bytes::copy_from_slice(data)) {
        let Ok(BatchItem::Batch(batch)) = item else { continue };
        let fields = (
            batch.base_offset(),
            batch.batch_length(),
            batch.partition_leader_epoch(),
            batch.magic(),
            batch.attributes(),
            batch.last_offset_delta(),
            batch.base_timestamp(),
            batch.max_timestamp(),
            batch.producer_epoch(),
            batch.records_count(),
            batch.compression(),
            batch.is_control(),
            batch.has_log_append_time(),
        );
        std::hint::black_box(fields);
        let _ = batch.last_offset();
        let _ = batch.crc_is_valid();
        let mut patch = batch.to_patchable();
        patch.set_producer(1, 2, 3).set_attributes(batch.attributes() | 0x10).set_base_offset(0);
        let patched = patch.finish();
        assert!(patched.crc_is_valid());
        assert_eq!(&patched.as_bytes()[HEADER_BYTES..], &batch.as_bytes()[HEADER_BYTES..]);
    }
});
