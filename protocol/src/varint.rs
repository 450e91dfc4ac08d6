//! Kafka's zig-zag varints (record fields), for the batches Spool builds and reads itself.

use bytes::{BufMut, BytesMut};

pub fn put_varint(buf: &mut BytesMut, value: i64) {
    put_uvarint(buf, ((value << 1) ^ (value >> 63)) as u64);
}

/// An unsigned varint (flexible versions' lengths and tags).
pub fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// The varint at `*at`, moving `at` past it; None if `buf` ends first or it is over 10 bytes.
pub fn get_varint(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}
