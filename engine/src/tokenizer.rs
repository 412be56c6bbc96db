//! The deterministic hash tokenizer used by the demo pipelines.
//!
//! Why: the demo text encoders only need stable ids in `[0, vocab)`; a real
//! `tokenizer.json` would need the `tokenizers` crate, which is not available offline
//! here, so a configured tokenizer file is reported as unsupported at load time.
//! Layout: id 0 pads, id 1 starts every sequence, words (lower-cased, split on
//! whitespace) hash with FNV-1a into `[2, vocab)`.

/// Padding id.
pub const PAD: i64 = 0;
/// Start-of-sequence id; an empty prompt encodes as `[BOS, PAD, ...]`.
pub const BOS: i64 = 1;

/// Encodes `prompt` into exactly `max_tokens` ids (truncated or padded).
pub fn encode(prompt: &str, max_tokens: usize, vocab: u32) -> Vec<i64> {
    let span = u64::from(vocab.max(3)) - 2;
    let mut ids = Vec::with_capacity(max_tokens);
    ids.push(BOS);
    for word in prompt.split_whitespace() {
        if ids.len() >= max_tokens {
            break;
        }
        let hash = fnv1a(word.to_lowercase().as_bytes());
        ids.push(2 + (hash % span) as i64);
    }
    ids.resize(max_tokens, PAD);
    ids.truncate(max_tokens);
    ids
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_truncates_and_is_stable() {
        let ids = encode("A cat  surfing", 6, 512);
        assert_eq!(ids.len(), 6);
        assert_eq!(ids[0], BOS);
        assert_eq!(&ids[4..], &[PAD, PAD]);
        assert_eq!(ids, encode("a CAT surfing", 6, 512));
        assert!(ids[1..4].iter().all(|&id| (2..512).contains(&id)));
        assert_eq!(encode("one two three four", 2, 512).len(), 2);
        assert_eq!(encode("", 3, 512), vec![BOS, PAD, PAD]);
    }
}
