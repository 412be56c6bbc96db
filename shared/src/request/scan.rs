//! Finding the `task_id` of a MessagePack body the strict decoder refused.
//!
//! A publisher waits on the reply key of its task id. When its body is malformed
//! (trailing bytes after the map, a value nested deeper than the decoder allows, a
//! truncated value after the id, a body over the size limit), the id may still be
//! readable, and the refusal can be answered instead of leaving the publisher waiting.
//! This walks the top-level map entry by entry without building values: keys it does
//! not need are skipped with an explicit counter (no recursion, so depth costs
//! nothing), and the walk stops at the first byte it cannot read.

use super::task_id_ok;

/// The valid `task_id` of a body whose top level is a MessagePack map, if one can
/// be read before the body breaks off. Values of other keys are skipped unread, so
/// their encoding errors (bad UTF-8, wrong types) do not matter.
pub fn scan_task_id(body: &[u8]) -> Option<String> {
    let mut r = Reader { body, at: 0 };
    let entries = r.map_len()?;
    for _ in 0..entries {
        // A key that is not a string cannot be `task_id`: skip it and its value.
        let before = r.at;
        let Some(key) = r.str_bytes() else {
            r.at = before;
            r.skip_value()?;
            r.skip_value()?;
            continue;
        };
        if key == b"task_id" {
            let id = std::str::from_utf8(r.str_bytes()?).ok()?;
            return task_id_ok(id).then(|| id.to_string());
        }
        r.skip_value()?;
    }
    None
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.body.len())?;
        let bytes = &self.body[self.at..end];
        self.at = end;
        Some(bytes)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A big-endian length of `n` bytes.
    fn len(&mut self, n: usize) -> Option<usize> {
        let bytes = self.take(n)?;
        let value = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        usize::try_from(value).ok()
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x80..=0x8f => Some(usize::from(b & 0x0f)),
            0xde => self.len(2),
            0xdf => self.len(4),
            _ => None,
        }
    }

    fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.len(1)?,
            0xda => self.len(2)?,
            0xdb => self.len(4)?,
            _ => return None,
        };
        self.take(n)
    }

    /// Skips one value, containers included, counting the items still owed.
    fn skip_value(&mut self) -> Option<()> {
        let mut owed: usize = 1;
        while owed > 0 {
            owed -= 1;
            let marker = self.byte()?;
            let (payload, items) = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (0, 2 * usize::from(marker & 0x0f)),
                0x90..=0x9f => (0, usize::from(marker & 0x0f)),
                0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
                0xc4 | 0xd9 => (self.len(1)?, 0),
                0xc5 | 0xda => (self.len(2)?, 0),
                0xc6 | 0xdb => (self.len(4)?, 0),
                0xc7 => (self.len(1)?.checked_add(1)?, 0),
                0xc8 => (self.len(2)?.checked_add(1)?, 0),
                0xc9 => (self.len(4)?.checked_add(1)?, 0),
                0xca => (4, 0),
                0xcb => (8, 0),
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 => (2, 0),
                0xce | 0xd2 => (4, 0),
                0xcf | 0xd3 => (8, 0),
                0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xd6 => (5, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                0xdc => (0, self.len(2)?),
                0xdd => (0, self.len(4)?),
                0xde => (0, self.len(2)?.checked_mul(2)?),
                0xdf => (0, self.len(4)?.checked_mul(2)?),
                0xc1 => return None,
            };
            self.take(payload)?;
            // Every item takes at least a byte: a count beyond the body is a broken body.
            owed = owed.checked_add(items).filter(|o| *o <= self.body.len() - self.at)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn encode(entries: Vec<(&str, Value)>) -> Vec<u8> {
        let map = Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect());
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &map).unwrap();
        out
    }

    /// A placeholder value that [`splice_nested`] replaces.
    const MARK: Value = Value::Ext(99, Vec::new());

    /// Replaces the placeholder with `depth` nested one-element arrays, written as
    /// bytes (building them as values would recurse as deep).
    fn splice_nested(body: &[u8], depth: usize) -> Vec<u8> {
        let at = body.windows(3).position(|w| w == [0xc7, 0x00, 99]).expect("the placeholder");
        let mut out = body[..at].to_vec();
        out.extend(std::iter::repeat_n(0x91u8, depth));
        out.push(0x01);
        out.extend_from_slice(&body[at + 3..]);
        out
    }

    #[test]
    fn finds_the_id_past_anything_it_need_not_read() {
        let every_kind = vec![
            ("nil", Value::Nil),
            ("bool", Value::from(true)),
            ("neg", Value::from(-7)),
            ("big", Value::from(u64::MAX)),
            ("f32", Value::F32(1.5)),
            ("f64", Value::F64(2.5)),
            ("bin", Value::Binary(vec![0; 300])),
            ("long", Value::from("x".repeat(70_000))),
            ("ext", Value::Ext(3, vec![1, 2, 3, 4])),
            ("map", Value::Map(vec![(Value::from("k"), Value::Array(vec![Value::Nil; 20]))])),
            ("deep", MARK),
            ("task_id", Value::from("t-1")),
        ];
        let body = splice_nested(&encode(every_kind), 100_000);
        assert_eq!(scan_task_id(&body).as_deref(), Some("t-1"));
    }

    #[test]
    fn stops_where_the_body_breaks() {
        let body = encode(vec![("v", Value::from(1)), ("task_id", Value::from("t-2")), ("prompt", Value::from("p"))]);
        assert_eq!(scan_task_id(&body[..body.len() - 1]).as_deref(), Some("t-2"), "cut after the id");
        let late = encode(vec![("prompt", Value::from("a cat")), ("task_id", Value::from("t-3"))]);
        assert_eq!(scan_task_id(&late[..8]), None, "cut before the id");
        for bad in [&b""[..], b"\xc1", b"\x93\x01\x02\x03", b"\x81\x01\x02", b"\xdf\xff\xff\xff\xff"] {
            assert_eq!(scan_task_id(bad), None, "{bad:?}");
        }
        let claims_too_much = [0x82, 0xa1, b'a', 0xdd, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(scan_task_id(&claims_too_much), None);
    }

    #[test]
    fn keys_that_are_not_strings_are_skipped() {
        let map = Value::Map(vec![
            (Value::from(7), Value::Array(vec![Value::Nil; 3])),
            (Value::Array(vec![Value::from("task_id")]), Value::from("not-me")),
            (Value::from("task_id"), Value::from("t-4")),
        ]);
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &map).unwrap();
        assert_eq!(scan_task_id(&body).as_deref(), Some("t-4"));
    }

    #[test]
    fn only_a_valid_id_counts() {
        for id in ["", "has space", &"x".repeat(65)] {
            assert_eq!(scan_task_id(&encode(vec![("task_id", Value::from(id))])), None, "{id:?}");
        }
        assert_eq!(scan_task_id(&encode(vec![("task_id", Value::from(5))])), None);
    }
}
