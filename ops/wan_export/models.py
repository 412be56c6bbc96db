"""Tiny reference modules (tokenizer, UMT5, WanTransformer3D, AutoencoderKLWan) and the
export wrappers that give them the engine's ONNX interface."""
import copy
import json
import math

import torch
from torch import nn

from .spec import CAMERA, CORPUS, LATENT_CHANNELS, MOODS, OBJECTS, PLACES, SUBJECTS, TIMES, VERBS

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in the UMT5 tokenizer
TOKENIZER_VOCAB = 1000


# --- tokenizer ----------------------------------------------------------------------

def train_tokenizer():
    """A T5-style (SentencePiece Unigram, Metaspace) tokenizer trained on CORPUS."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    lines = [line.strip() for line in CORPUS.strip().splitlines() if line.strip()]
    # Capitalised, punctuated copies so "A", "," and "." are pieces too.
    lines += [line.capitalize() + ("." if i % 2 else ",") for i, line in enumerate(lines)]
    n = len(SUBJECTS) * 4
    for i in range(n):
        s, v, p = SUBJECTS[i % len(SUBJECTS)], VERBS[(7 * i) % len(VERBS)], PLACES[(11 * i) % len(PLACES)]
        m, t = MOODS[(5 * i) % len(MOODS)], TIMES[(3 * i) % len(TIMES)].strip()
        lines.append(f"A {m} {s} {v} through the {p} {t}.")
        o, c, m2 = OBJECTS.split()[(13 * i) % len(OBJECTS.split())], CAMERA[i % len(CAMERA)].strip(), MOODS[(3 * i) % len(MOODS)]
        lines.append(f"The camera {c} as the {s}s carrying a {m2} {o} reach the {p}s; {t} everything is {m}!")
    trainer = trainers.UnigramTrainer(
        vocab_size=TOKENIZER_VOCAB, special_tokens=SPECIAL_TOKENS, unk_token="<unk>",
        max_piece_length=12, shrinking_factor=0.75, n_sub_iterations=2, show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    # The trainer's EM sums in hash order, so scores differ in the last bits from run to
    # run: round them and rebuild the model in a canonical order (deterministic output).
    trained = json.loads(tok.to_str())["model"]["vocab"]
    special = [[t, 0.0] for t in SPECIAL_TOKENS]
    pieces = sorted(([p, round(s, 3)] for p, s in trained if p not in SPECIAL_TOKENS), key=lambda x: (-x[1], x[0]))
    canonical = Tokenizer(models.Unigram([tuple(x) for x in special + pieces], unk_id=2, byte_fallback=False))
    canonical.normalizer, canonical.pre_tokenizer, canonical.decoder = tok.normalizer, tok.pre_tokenizer, tok.decoder
    tok = canonical
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return tok


def hf_tokenizer(tokenizer_json_path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=tokenizer_json_path, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        padding_side="right", truncation_side="right",
    )


# --- tiny modules ---------------------------------------------------------------------

def text_encoder_config(vocab):
    return dict(
        vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
        layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, tie_word_embeddings=False,
    )


def transformer_config(text_dim):
    return dict(
        patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=32, in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS, text_dim=text_dim, freq_dim=256, ffn_dim=128, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
    )


def vae_config():
    # latents_mean / latents_std: the class defaults (the real Wan2.1 VAE statistics).
    return dict(
        base_dim=8, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[False, True, True], dropout=0.0,
    )


def reinit_(module, seed, out_gain=None):
    """Seeded re-initialisation of every parameter (diffusers zero-inits some layers).

    Norm scales ~ 1 + 0.1 N, biases ~ 0.05 N, matrices / conv kernels ~ N / sqrt(fan_in).
    `out_gain` maps a parameter-name prefix to an extra factor (output layers)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma" or ("norm" in name and leaf == "weight"):
                value = 1.0 + 0.1 * noise
            elif leaf == "bias":
                value = 0.05 * noise
            elif "scale_shift_table" in name:
                value = noise / math.sqrt(p.shape[-1])
            elif p.ndim >= 2:
                value = noise / math.sqrt(p.numel() // p.shape[0])
            else:
                value = 0.1 * noise
            for prefix, gain in (out_gain or {}).items():
                if name.startswith(prefix):
                    value = value * gain
            p.copy_(value.to(p.dtype))


def build_tiny(vocab, seed):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    te_cfg = text_encoder_config(vocab)
    text_encoder = UMT5EncoderModel(UMT5Config(**te_cfg)).eval()
    reinit_(text_encoder, seed + 1)
    transformer = WanTransformer3DModel(**transformer_config(te_cfg["d_model"])).eval()
    reinit_(transformer, seed + 2)
    vae = AutoencoderKLWan(**vae_config()).eval()
    # The decoder's last conv is scaled so decoded pixels mostly fall inside [-1, 1].
    reinit_(vae, seed + 3, out_gain={"decoder.conv_out.": 0.6})
    return text_encoder, transformer, vae


# --- export wrappers ---------------------------------------------------------------------

class TextEncoderExport(nn.Module):
    """UMT5 encoder; rows at padded positions zeroed, as WanPipeline._get_t5_prompt_embeds
    (which trims each sequence to its length and pads with zeros)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return h * attention_mask.unsqueeze(-1).to(h.dtype)


class DenoiserExport(nn.Module):
    """WanTransformer3DModel with a positional signature; optional half-precision body."""

    def __init__(self, transformer, half=False):
        super().__init__()
        self.transformer = transformer
        self.half_body = half

    def forward(self, hidden_states, timestep, encoder_hidden_states):
        if self.half_body:
            hidden_states, encoder_hidden_states = hidden_states.half(), encoder_hidden_states.half()
        out = self.transformer(hidden_states=hidden_states, timestep=timestep,
                               encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
        return out.float()


class FullSequenceUpsample3d(nn.Module):
    """WanResample("upsample3d") over a whole latent sequence, equal to the cached
    frame-by-frame decode: frame 0 is not doubled (the cache's "Rep" state), frames 1..
    go through the causal time conv with zero left padding (frame 0 counting as zero),
    which is what the cache reproduces chunk by chunk."""

    def __init__(self, resample):
        super().__init__()
        assert resample.mode == "upsample3d"
        self.time_conv = resample.time_conv
        self.resample = resample.resample

    def forward(self, x, feat_cache=None, feat_idx=None):
        b, c, t, h, w = x.shape
        # Frame 0 replaced by zeros, then its output dropped: frames 1.. see exactly the
        # zero-padded causal window, and F = 1 needs no special case (empty slice).
        rest = self.time_conv(torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:]], 2))[:, :, 1:]
        rest = rest.reshape(b, 2, c, t - 1, h, w)
        rest = torch.stack((rest[:, 0], rest[:, 1]), 3).reshape(b, c, 2 * (t - 1), h, w)
        x = torch.cat([x[:, :, :1], rest], 2)
        t = x.shape[2]
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        x = self.resample(x)
        return x.view(b, t, x.size(1), x.size(2), x.size(3)).permute(0, 2, 1, 3, 4)


def full_sequence_decoder(vae):
    """A copy of vae.decoder whose temporal upsamplers work on the whole sequence; called
    without a feature cache every causal conv pads zeros on the left, like the cache."""
    decoder = copy.deepcopy(vae.decoder)
    for block in decoder.up_blocks:
        ups = getattr(block, "upsamplers", None)
        if ups is not None and ups[0].mode == "upsample3d":
            ups[0] = FullSequenceUpsample3d(ups[0])
    return decoder


class VaeDecoderExport(nn.Module):
    """Normalised latents -> video in [-1, 1]: WanPipeline's de-normalisation, then
    vae.decode (full-sequence formulation, or the traced frame loop if `loop`)."""

    def __init__(self, vae, loop=False):
        super().__init__()
        cfg = vae.config
        self.vae = vae
        self.loop = loop
        self.decoder = None if loop else full_sequence_decoder(vae)
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1))
        self.register_buffer("latents_std", 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1))

    def forward(self, latents):
        z = latents / self.latents_std + self.latents_mean
        if self.loop:
            return self.vae.decode(z, return_dict=False)[0]
        out = self.decoder(self.vae.post_quant_conv(z))
        return torch.clamp(out, min=-1.0, max=1.0)


def reference_decode(vae, latents):
    """What WanPipeline does after the loop when output_type != "latent"."""
    cfg = vae.config
    mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    return vae.decode(latents / std + mean, return_dict=False)[0]
