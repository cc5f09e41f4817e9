//! Order violations: a record stored, or acked, before an earlier record of
//! the same stream and partition.
//!
//! Two independent checks:
//! - at ack time ([`AckOrder`]): fed each stream's acks in send order, it
//!   counts records whose acked offset is not above the highest offset
//!   acked for an earlier record of the stream in that partition. (A
//!   partition's delivery reports arrive in offset order, so such a record
//!   was also acked before the earlier one.) `native` has no per-stream
//!   view of its acks, only librdkafka's delivery reports as they come:
//!   [`DeliveryOrder`] checks the same property from that side, and is zero
//!   exactly when [`AckOrder`] would be;
//! - at store time ([`StoredOrder`]): fed a partition's records in offset
//!   order, as a consumer reads them back, it counts records whose sequence
//!   number is below one already seen for the same stream in that
//!   partition. It needs nothing from the producer but the keys.

use std::collections::HashMap;

use super::workload::parse_key;

/// Ack-time order of one stream.
#[derive(Debug, Default)]
pub struct AckOrder {
    /// Highest offset acked per partition, indexed by partition.
    highest: Vec<i64>,
    /// Records acked out of order.
    pub violations: u64,
}

impl AckOrder {
    /// Takes the next ack of the stream, in send order.
    pub fn ack(&mut self, partition: i32, offset: i64) {
        let Ok(index) = usize::try_from(partition) else {
            return;
        };
        if index >= self.highest.len() {
            self.highest.resize(index + 1, -1);
        }
        let highest = &mut self.highest[index];
        if offset <= *highest {
            self.violations += 1;
        } else {
            *highest = offset;
        }
    }
}

/// Ack-time order of every stream, from delivery reports as they arrive
/// (in offset order within a partition) rather than in send order.
#[derive(Debug, Default)]
pub struct DeliveryOrder {
    /// Per stream, per partition: one above the highest sequence number
    /// reported (0: none yet), and the highest offset.
    highest: Vec<Vec<(u64, i64)>>,
    /// Reports of a record sent before one already reported in its
    /// partition, or at an offset not above one already reported.
    pub violations: u64,
}

impl DeliveryOrder {
    /// Takes the report of record `seq` of `stream`, stored at `offset` of
    /// `partition`.
    pub fn report(&mut self, stream: u32, seq: u64, partition: i32, offset: i64) {
        let (Ok(stream), Ok(partition)) = (usize::try_from(stream), usize::try_from(partition))
        else {
            return;
        };
        if stream >= self.highest.len() {
            self.highest.resize_with(stream + 1, Vec::new);
        }
        let partitions = &mut self.highest[stream];
        if partition >= partitions.len() {
            partitions.resize(partition + 1, (0, -1));
        }
        let (next_seq, highest_offset) = &mut partitions[partition];
        // An offset of -1: stored, position unknown (see produce::kafka);
        // only the sequence can be checked.
        if seq < *next_seq || (offset >= 0 && offset <= *highest_offset) {
            self.violations += 1;
            return;
        }
        *next_seq = seq + 1;
        *highest_offset = (*highest_offset).max(offset);
    }
}

/// Store-time order of a topic, read back partition by partition.
#[derive(Debug, Default)]
pub struct StoredOrder {
    /// Highest sequence number seen per (partition, stream).
    highest: HashMap<(i32, u32), u64>,
    /// Records read.
    pub checked: u64,
    /// Records stored after a record its stream sent later.
    pub violations: u64,
    /// Records whose key is not a benchmark key.
    pub foreign: u64,
}

impl StoredOrder {
    /// Takes the next record of `partition`, in offset order.
    pub fn observe(&mut self, partition: i32, key: Option<&[u8]>) {
        let Some((stream, seq)) = key.and_then(parse_key) else {
            self.foreign += 1;
            return;
        };
        self.checked += 1;
        match self.highest.get_mut(&(partition, stream)) {
            Some(highest) if seq <= *highest => self.violations += 1,
            Some(highest) => *highest = seq,
            None => {
                self.highest.insert((partition, stream), seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::key;

    #[test]
    fn acks_must_grow_per_partition() {
        let mut order = AckOrder::default();
        for (partition, offset) in [(0, 0), (1, 0), (0, 1), (1, 5), (0, 3)] {
            order.ack(partition, offset);
        }
        assert_eq!(order.violations, 0);
        // Offset 2 of partition 0 acked after offset 3: the record sent later
        // was stored first.
        order.ack(0, 2);
        order.ack(0, 4);
        assert_eq!(order.violations, 1);
    }

    #[test]
    fn reported_sequence_numbers_must_grow_per_stream_and_partition() {
        let mut order = DeliveryOrder::default();
        // (stream, seq, partition, offset), as the reports arrive.
        let reports = [
            (0, 0, 0, 0),
            (1, 0, 0, 1),
            (0, 1, 1, 0),
            (0, 2, 0, 2),
            (1, 1, 0, 3),
        ];
        for (stream, seq, partition, offset) in reports {
            order.report(stream, seq, partition, offset);
        }
        assert_eq!(order.violations, 0);
        // Stream 0's record 1 went to partition 1; its record 3 in partition
        // 0 reported after its record 5 there: stored after a later one.
        order.report(0, 5, 0, 4);
        order.report(0, 3, 0, 5);
        assert_eq!(order.violations, 1);
        // An offset that does not grow is a violation too.
        order.report(1, 7, 0, 3);
        assert_eq!(order.violations, 2);
    }

    #[test]
    fn stored_sequence_numbers_must_grow_per_stream_and_partition() {
        let mut order = StoredOrder::default();
        let records = [
            (0, 1, 0),
            (0, 2, 0),
            (0, 1, 2),
            (1, 1, 1),
            (0, 2, 1),
            (0, 1, 1),
        ];
        for (partition, stream, seq) in records {
            order.observe(partition, Some(&key(stream, seq)));
        }
        order.observe(0, Some(b"not ours"));
        order.observe(0, None);
        assert_eq!(order.checked, 6);
        assert_eq!(order.foreign, 2);
        assert_eq!(
            order.violations, 1,
            "stream 1's record 1 stored after its record 2 in partition 0"
        );
    }
}
