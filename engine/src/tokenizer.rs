//! Prompt tokenizers: a real `tokenizer.json` (Hugging Face format, e.g. UMT5's for
//! Wan2.1), or the deterministic hash tokenizer of the demo pipelines.
//!
//! Why both: the demo text encoders only need stable ids in `[0, vocab)`, and a
//! pipeline with `"tokenizer": null` keeps working without a file. A real model needs
//! the exact ids its encoder was trained on, so a configured file goes through the
//! `tokenizers` crate, the same library the reference Python pipeline uses.
//!
//! Both produce exactly `max_tokens` ids and an attention mask (1 for a token, 0 for
//! padding). The file path follows the reference pipeline: the prompt's whitespace
//! is collapsed and trimmed, special tokens are added (UMT5 appends `</s>`), the
//! sequence is truncated to `max_tokens` (special tokens kept) and padded with the
//! `<pad>` token.
//!
//! The hash layout: id 0 pads, id 1 starts every sequence, words (lower-cased, split
//! on whitespace) hash with FNV-1a into `[2, vocab)`.

use crate::error::EngineError;
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, TruncationParams};

/// Padding id of the hash tokenizer.
pub const PAD: i64 = 0;
/// Start-of-sequence id of the hash tokenizer; an empty prompt encodes as `[BOS, PAD, ...]`.
pub const BOS: i64 = 1;

/// A prompt as the text encoder takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, exactly `max_tokens` of them.
    pub ids: Vec<i64>,
    /// 1 for a token, 0 for padding; same length.
    pub mask: Vec<i64>,
}

/// The tokenizer of a pipeline.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    /// The built-in hash tokenizer (`"tokenizer": null`).
    Hash {
        /// Ids lie in `[0, vocab)`.
        vocab: u32,
        /// Sequence length.
        max_tokens: usize,
    },
    /// A `tokenizer.json`, set up to pad and truncate to `max_tokens`.
    File(Box<tokenizers::Tokenizer>),
}

impl Tokenizer {
    /// The hash tokenizer.
    pub fn hash(vocab: u32, max_tokens: usize) -> Tokenizer {
        Tokenizer::Hash { vocab, max_tokens }
    }

    /// Loads `path` and sets it up to pad and truncate to `max_tokens`. A missing,
    /// unreadable or malformed file, or one without a `<pad>` token, is a load error
    /// that names the file.
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Tokenizer, EngineError> {
        let fail = |source: tokenizers::Error| EngineError::Load {
            component: "tokenizer",
            path: path.display().to_string(),
            source,
        };
        let mut tokenizer = tokenizers::Tokenizer::from_file(path).map_err(fail)?;
        let (pad_id, pad_token) = match (tokenizer.get_padding(), tokenizer.token_to_id("<pad>")) {
            (_, Some(id)) => (id, "<pad>".to_string()),
            (Some(p), None) => (p.pad_id, p.pad_token.clone()),
            (None, None) => return Err(fail("the tokenizer has no `<pad>` token and no padding settings".into())),
        };
        let truncation = TruncationParams { max_length: max_tokens, ..TruncationParams::default() };
        tokenizer.with_truncation(Some(truncation)).map_err(fail)?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_tokens),
            pad_id,
            pad_token,
            ..PaddingParams::default()
        }));
        Ok(Tokenizer::File(Box::new(tokenizer)))
    }

    /// Encodes `prompt` into exactly `max_tokens` ids and its mask.
    pub fn encode(&self, prompt: &str) -> Result<Tokens, EngineError> {
        match self {
            Tokenizer::Hash { vocab, max_tokens } => Ok(encode_hash(prompt, *max_tokens, *vocab)),
            Tokenizer::File(tokenizer) => {
                let clean = clean_prompt(prompt);
                let encoding = tokenizer
                    .encode(clean, true)
                    .map_err(|source| EngineError::Inference { stage: "tokenizer".into(), source })?;
                let ids = encoding.get_ids().iter().map(|&id| i64::from(id)).collect();
                let mask = encoding.get_attention_mask().iter().map(|&m| i64::from(m)).collect();
                Ok(Tokens { ids, mask })
            }
        }
    }
}

/// Collapses runs of whitespace into one space and trims, as the reference pipeline
/// does before tokenizing.
pub fn clean_prompt(prompt: &str) -> String {
    prompt.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The hash tokenizer: exactly `max_tokens` ids (truncated or padded) and their mask.
pub fn encode_hash(prompt: &str, max_tokens: usize, vocab: u32) -> Tokens {
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
    ids.truncate(max_tokens);
    let mut mask = vec![1; ids.len()];
    ids.resize(max_tokens, PAD);
    mask.resize(max_tokens, 0);
    Tokens { ids, mask }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_pads_truncates_and_is_stable() {
        let t = encode_hash("A cat  surfing", 6, 512);
        assert_eq!(t.ids.len(), 6);
        assert_eq!(t.ids[0], BOS);
        assert_eq!(&t.ids[4..], &[PAD, PAD]);
        assert_eq!(t.mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(t, encode_hash("a CAT surfing", 6, 512));
        assert!(t.ids[1..4].iter().all(|&id| (2..512).contains(&id)));
        assert_eq!(encode_hash("one two three four", 2, 512).mask, vec![1, 1]);
        assert_eq!(encode_hash("", 3, 512), Tokens { ids: vec![BOS, PAD, PAD], mask: vec![1, 0, 0] });
    }

    #[test]
    fn prompts_are_cleaned_like_the_reference() {
        let cases = [("  a \t red\n\nfox ", "a red fox"), ("", ""), ("one", "one"), ("\u{3000}x\u{3000}y", "x y")];
        for (raw, want) in cases {
            assert_eq!(clean_prompt(raw), want, "{raw:?}");
        }
    }
}
