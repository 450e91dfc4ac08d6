//! Operations that remove data: suffix truncation (for Raft), retention, and deleting the
//! partition. Each works on whole batches and keeps indexes, producer state, the epoch cache
//! and the tail cache consistent with the remaining log.
//!
//! Invariant: retention never deletes the active segment, nor a segment with data that is not
//! yet durable or whose seal is not yet persisted.

use crate::log::{io_error, PartitionLog};
use crate::recovery::load_tail_page;
use crate::segment::{self, Segment};
use crate::StorageError;

impl PartitionLog {
    /// Drops every batch at or after `offset`; a batch containing `offset` is dropped whole.
    pub async fn truncate_suffix(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset >= self.log_end_offset {
            return Ok(());
        }
        let start = self.log_start_offset();
        if offset < start {
            let end = self.log_end_offset;
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        // With everything durable, truncation only has to deal with files.
        self.flush().await?;
        let i = self.segment_index(offset);
        let (position, new_end) = self.batch_start(i, offset).await?;
        while self.segments.len() > i + 1 {
            let Some(removed) = self.segments.pop() else {
                break;
            };
            self.remove_segment_files(removed).await?;
        }
        self.truncate_segment(i, position, new_end).await?;
        self.log_end_offset = new_end;
        self.durable_end_offset = new_end;
        self.tail.truncate_from(new_end);
        if self.epochs.truncate_from_end(new_end) {
            self.write_epoch_checkpoint(i64::MAX).await?;
        }
        let producers_from = self.load_producer_snapshot().await?;
        self.replay(producers_from, i64::MAX, producers_from).await
    }

    /// Position and base offset of the batch containing `offset` in segment `i`.
    async fn batch_start(&self, i: usize, offset: i64) -> Result<(u64, i64), StorageError> {
        let segment = &self.segments[i];
        if offset == segment.base_offset {
            return Ok((0, offset));
        }
        let indexes = self.ensure_indexes(segment).await?;
        let from = u64::from(indexes.offsets.lookup(segment.relative(offset)));
        let path = segment::log_path(&self.dir, segment.base_offset);
        let Some(file) = segment.file.as_ref() else {
            return Ok((0, segment.base_offset));
        };
        let mut found = None;
        let scan = segment::scan_batches(
            file,
            from,
            segment.durable_bytes,
            None,
            1 << 16,
            |position, header, _| {
                if header.last_offset() >= offset {
                    found = Some((position, header.base_offset));
                    return false;
                }
                true
            },
        )
        .await
        .map_err(io_error(&path))?;
        found.ok_or(StorageError::SegmentCorrupt {
            path,
            position: scan.valid_bytes,
        })
    }

    /// Cuts segment `i` at `position` (a batch boundary) and makes it the active segment.
    async fn truncate_segment(
        &mut self,
        i: usize,
        position: u64,
        new_end: i64,
    ) -> Result<(), StorageError> {
        let mut indexes = self.ensure_indexes(&self.segments[i]).await?;
        let segment = &self.segments[i];
        let path = segment::log_path(&self.dir, segment.base_offset);
        let relative_end = segment.relative(new_end);
        indexes.offsets.truncate_to_position(position);
        indexes.times.truncate_to_offset(relative_end);
        // Batches before the last remaining time index entry have smaller timestamps, so the
        // exact max timestamp only needs a scan from that entry on.
        let mut max_timestamp = indexes.times.last().map_or((-1, -1), |(ts, relative)| {
            (ts, segment.base_offset + i64::from(relative))
        });
        let scan_from = indexes
            .times
            .last()
            .map_or(0, |(_, relative)| indexes.offsets.lookup(relative));
        if let Some(file) = segment.file.as_ref() {
            segment::scan_batches(
                file,
                u64::from(scan_from),
                position,
                None,
                segment::SCAN_CHUNK_BYTES,
                |_, header, _| {
                    if header.max_timestamp > max_timestamp.0 {
                        max_timestamp = (header.max_timestamp, header.last_offset());
                    }
                    true
                },
            )
            .await
            .map_err(io_error(&path))?;
            file.truncate(position).await.map_err(io_error(&path))?;
            file.fdatasync().await.map_err(io_error(&path))?;
        }
        let last_index_position = u64::from(indexes.offsets.lookup(u32::MAX));
        let segment = &mut self.segments[i];
        segment.size_bytes = position;
        segment.durable_bytes = position;
        segment.next_offset = new_end;
        segment.durable_next_offset = new_end;
        segment.max_timestamp = max_timestamp;
        segment.durable_max_timestamp = max_timestamp;
        segment.bytes_since_index = position - last_index_position.min(position);
        segment.sealed = false;
        segment.seal_pending = None;
        if position == 0 {
            segment.rolling_ms = None;
        }
        *segment.indexes.borrow_mut() = Some(indexes);
        load_tail_page(segment, &path).await
    }

    async fn remove_segment_files(&self, segment: Segment) -> Result<(), StorageError> {
        let base = segment.base_offset;
        if let Some(file) = segment.file {
            let path = segment::log_path(&self.dir, base);
            file.close().await.map_err(io_error(&path))?;
        }
        // The log file first: index files without it are removed as leftovers on open.
        for path in [
            segment::log_path(&self.dir, base),
            segment::index_path(&self.dir, base),
            segment::time_index_path(&self.dir, base),
        ] {
            self.backend.remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(())
    }

    /// Deletes whole old segments past `retention.ms` (by their max timestamp) or beyond
    /// `retention.bytes`, oldest first, never the active one. Returns how many were deleted.
    pub async fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, StorageError> {
        let mut deleted = 0;
        let mut total_bytes: u64 = self.segments.iter().map(|segment| segment.size_bytes).sum();
        while self.segments.len() > 1 {
            let first = &self.segments[0];
            let settled = first.file.is_some()
                && first.seal_pending.is_none()
                && first.durable_bytes == first.size_bytes;
            let retention_ms = self.config.retention_ms;
            let retention_bytes = self.config.retention_bytes;
            let expired = retention_ms >= 0 && now_ms - first.max_timestamp.0 > retention_ms;
            let oversize = retention_bytes >= 0
                && total_bytes - first.size_bytes >= retention_bytes.unsigned_abs();
            if !settled || !(expired || oversize) {
                break;
            }
            let removed = self.segments.remove(0);
            total_bytes -= removed.size_bytes;
            tracing::debug!(
                base = removed.base_offset,
                expired,
                oversize,
                "retention deletes segment"
            );
            self.remove_segment_files(removed).await?;
            deleted += 1;
        }
        if deleted > 0 {
            self.backend
                .sync_dir(&self.dir)
                .map_err(io_error(&self.dir))?;
            let log_start = self.log_start_offset();
            self.tail.drop_before(log_start);
            if self.epochs.truncate_from_start(log_start) {
                self.write_epoch_checkpoint(self.durable_end_offset).await?;
                self.epochs_dirty = true;
            }
        }
        Ok(deleted)
    }

    /// Removes the partition directory and everything in it.
    pub async fn delete(mut self) -> Result<(), StorageError> {
        self.close_files().await?;
        self.backend
            .remove_dir_all(&self.dir)
            .map_err(io_error(&self.dir))
    }
}
