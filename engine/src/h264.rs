//! H.264 encoding of decoded frames with OpenH264: colour conversion, the encoder's
//! settings, and splitting its Annex B output into parameter sets and samples.
//!
//! Why these settings: the clip must play in every browser's `<video>`, so the
//! stream is constrained baseline (no B-frames: decode order is display order and
//! the MP4 needs no composition offsets), 4:2:0 with even sides, one IDR at the start,
//! no skipped frames (the MP4 must hold exactly the frames asked for), and one
//! encoder thread (same frames, same bytes). Colours are converted with the BT.601
//! matrix in limited range (Y 16-235, Cb/Cr 16-240), and the SPS says so (VUI).

use crate::output::Video;
use openh264::encoder::{
    BitRate, EncodedBitStream, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, SpsPpsStrategy, VuiConfig,
};
use openh264::formats::YUVBuffer;
use openh264::{OpenH264API, Timestamp};

/// Frames per second of every MP4: Wan's native rate, which the demo pipelines share.
pub const FPS: u32 = 16;

/// Smallest side OpenH264 encodes (one macroblock).
const MIN_SIDE: usize = 16;
/// Largest sides OpenH264 encodes (level 5.2).
const MAX_SIDES: (usize, usize) = (3840, 2160);

/// NAL unit types the muxer needs to tell apart.
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// Why a video could not be encoded as H.264.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H264Error {
    /// Width or height is odd: 4:2:0 chroma needs even sides. Pipelines produce
    /// multiples of their spatial downsample (8), so this is refused, not padded.
    #[error("frame size {width}x{height}: H.264 4:2:0 needs an even width and height")]
    OddSize {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
    },
    /// A side outside what the encoder accepts.
    #[error("frame size {width}x{height} is outside {MIN_SIDE}x{MIN_SIDE} to {}x{} (either orientation)", MAX_SIDES.0, MAX_SIDES.1)]
    OutOfRange {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
    },
    /// Nothing to encode.
    #[error("no frames to encode")]
    NoFrames,
    /// The frame data is shorter than `3 x frames x height x width`.
    #[error("frame data holds {len} values, {need} needed for {frames} frames of {width}x{height}")]
    ShortData {
        /// Values present.
        len: usize,
        /// Values needed.
        need: usize,
        /// Frames.
        frames: usize,
        /// Width.
        width: usize,
        /// Height.
        height: usize,
    },
    /// OpenH264 failed.
    #[error("OpenH264 failed at {stage}")]
    Encoder {
        /// `init` or `frame <n>`.
        stage: String,
        /// OpenH264's error.
        #[source]
        source: openh264::Error,
    },
    /// The encoder dropped a frame although skipping is off.
    #[error("the encoder produced no picture for frame {frame}")]
    Skipped {
        /// 0-based frame index.
        frame: usize,
    },
    /// The first frame came without an SPS and a PPS.
    #[error("the encoder produced no SPS/PPS")]
    MissingParameterSets,
}

/// One encoded frame: NAL units with 4-byte big-endian lengths (the MP4 form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Length-prefixed NAL units.
    pub(crate) data: Vec<u8>,
    /// An IDR picture (a sync sample).
    pub(crate) key: bool,
}

/// An encoded clip, ready for the muxer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedVideo {
    /// Width in pixels.
    pub(crate) width: usize,
    /// Height in pixels.
    pub(crate) height: usize,
    /// The sequence parameter set, without start code.
    pub(crate) sps: Vec<u8>,
    /// The picture parameter set, without start code.
    pub(crate) pps: Vec<u8>,
    /// One per frame, in display (= decode) order.
    pub(crate) samples: Vec<Sample>,
}

/// Checks the sides before anything reaches OpenH264 (whose buffers panic on odd sides).
pub(crate) fn check_size(width: usize, height: usize) -> Result<(), H264Error> {
    if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(H264Error::OddSize { width, height });
    }
    let (long, short) = (width.max(height), width.min(height));
    if short < MIN_SIDE || long > MAX_SIDES.0 || short > MAX_SIDES.1 {
        return Err(H264Error::OutOfRange { width, height });
    }
    Ok(())
}

/// Encodes the first `frames` frames of `video` (all of them when it has fewer).
pub(crate) fn encode(video: &Video, frames: usize) -> Result<EncodedVideo, H264Error> {
    let (width, height) = (video.width, video.height);
    check_size(width, height)?;
    let frames = frames.min(video.frames);
    if frames == 0 {
        return Err(H264Error::NoFrames);
    }
    let need = 3 * video.frames * height * width;
    if video.data.len() < need {
        let len = video.data.len();
        return Err(H264Error::ShortData { len, need, frames: video.frames, width, height });
    }
    let fail = |stage: String| move |source| H264Error::Encoder { stage, source };
    let mut encoder =
        Encoder::with_api_config(OpenH264API::from_source(), config(width, height)).map_err(fail("init".into()))?;
    let mut out = EncodedVideo { width, height, sps: vec![], pps: vec![], samples: Vec::with_capacity(frames) };
    for f in 0..frames {
        let yuv = YUVBuffer::from_vec(yuv420(video, f), width, height);
        let at = Timestamp::from_millis(f as u64 * 1000 / u64::from(FPS));
        let stream = encoder.encode_at(&yuv, at).map_err(fail(format!("frame {f}")))?;
        let key = stream.frame_type() == FrameType::IDR;
        let mut sample = Sample { data: Vec::new(), key };
        for_each_nal(&stream, |nal| sort_nal(nal, &mut out, &mut sample));
        if sample.data.is_empty() || matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Err(H264Error::Skipped { frame: f });
        }
        out.samples.push(sample);
    }
    if out.sps.is_empty() || out.pps.is_empty() {
        return Err(H264Error::MissingParameterSets);
    }
    Ok(out)
}

/// The encoder settings (see the module's doc for why).
fn config(width: usize, height: usize) -> EncoderConfig {
    // Rate control off: OpenH264 encodes at its base QP (26), so short clips keep a
    // steady quality and no frame is ever skipped. The bit rate is only a hint then.
    let bps = (width * height * FPS as usize / 4).clamp(200_000, 8_000_000) as u32;
    EncoderConfig::new()
        .profile(Profile::Baseline)
        .rate_control_mode(RateControlMode::Off)
        .bitrate(BitRate::from_bps(bps))
        .max_frame_rate(FrameRate::from_hz(FPS as f32))
        .skip_frames(false)
        .intra_frame_period(IntraFramePeriod::from_num_frames(0))
        .sps_pps_strategy(SpsPpsStrategy::ConstantId)
        .num_threads(1)
        .vui(VuiConfig::bt601())
}

/// Calls `f` with every NAL unit of one encoded frame, without its start code, in order.
fn for_each_nal(stream: &EncodedBitStream<'_>, mut f: impl FnMut(&[u8])) {
    for layer in (0..stream.num_layers()).filter_map(|l| stream.layer(l)) {
        for n in 0..layer.nal_count() {
            if let Some(nal) = layer.nal_unit(n) {
                f(strip_start_code(nal));
            }
        }
    }
}

/// Keeps the first SPS and PPS for the `avcC` box; every other NAL unit goes into
/// the frame's sample with a 4-byte length (repeated parameter sets are dropped).
fn sort_nal(nal: &[u8], out: &mut EncodedVideo, sample: &mut Sample) {
    match nal.first().map(|b| b & 0x1f) {
        None => {}
        Some(NAL_SPS) if out.sps.is_empty() => out.sps = nal.to_vec(),
        Some(NAL_PPS) if out.pps.is_empty() => out.pps = nal.to_vec(),
        Some(NAL_SPS | NAL_PPS) => {}
        Some(_) => {
            sample.data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            sample.data.extend_from_slice(nal);
        }
    }
}

/// A NAL unit without its Annex B start code (`00 00 01` or `00 00 00 01`).
fn strip_start_code(nal: &[u8]) -> &[u8] {
    let zeros = nal.iter().take_while(|&&b| b == 0).count();
    match nal.get(zeros) {
        Some(1) if zeros >= 2 => &nal[zeros + 1..],
        _ => nal,
    }
}

/// Frame `f` as planar I420: BT.601 limited range, chroma averaged over 2x2 pixels.
/// Sides must be even (checked by [`check_size`]).
pub(crate) fn yuv420(video: &Video, f: usize) -> Vec<u8> {
    let (w, h) = (video.width, video.height);
    let rgb = video.rgb_frame(f);
    let mut out = vec![0u8; w * h * 3 / 2];
    let (y_plane, chroma) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(w * h / 4);
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        let [r, g, b] = [px[0], px[1], px[2]].map(i32::from);
        y_plane[i] = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
    }
    for cy in 0..h / 2 {
        for cx in 0..w / 2 {
            let mut sum = [0i32; 3];
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let i = ((2 * cy + dy) * w + 2 * cx + dx) * 3;
                for (s, v) in sum.iter_mut().zip(&rgb[i..i + 3]) {
                    *s += i32::from(*v);
                }
            }
            let [r, g, b] = sum.map(|s| (s + 2) / 4);
            let c = cy * (w / 2) + cx;
            u_plane[c] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128).clamp(0, 255) as u8;
            v_plane[c] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128).clamp(0, 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(frames: usize, height: usize, width: usize) -> Video {
        let data = (0..3 * frames * height * width).map(|i| ((i % 13) as f32 / 6.0) - 1.0).collect();
        Video { data, frames, height, width }
    }

    #[test]
    fn bt601_limited_range_corners() {
        let mut v = video(1, 2, 2);
        v.data.iter_mut().for_each(|x| *x = -1.0);
        assert_eq!(yuv420(&v, 0), vec![16, 16, 16, 16, 128, 128], "black");
        v.data.iter_mut().for_each(|x| *x = 1.0);
        assert_eq!(yuv420(&v, 0), vec![235, 235, 235, 235, 128, 128], "white");
    }

    #[test]
    fn sizes_are_checked_before_the_encoder() {
        assert!(matches!(check_size(15, 16), Err(H264Error::OddSize { width: 15, height: 16 })));
        assert!(matches!(check_size(16, 17), Err(H264Error::OddSize { .. })));
        assert!(matches!(check_size(8, 16), Err(H264Error::OutOfRange { .. })));
        assert!(matches!(check_size(4000, 16), Err(H264Error::OutOfRange { .. })));
        assert!(check_size(16, 16).is_ok() && check_size(2160, 3840).is_ok());
        let odd = encode(&video(2, 16, 33), 2).unwrap_err();
        assert_eq!(odd.to_string(), "frame size 33x16: H.264 4:2:0 needs an even width and height");
    }

    #[test]
    fn every_frame_becomes_one_sample_and_the_first_is_key() {
        let encoded = encode(&video(5, 24, 32), 4).expect("encode");
        assert_eq!(encoded.samples.len(), 4, "only the frames asked for");
        assert!(encoded.samples[0].key && !encoded.samples[1..].iter().any(|s| s.key));
        assert_eq!(encoded.sps.first().map(|b| b & 0x1f), Some(NAL_SPS));
        assert_eq!(encoded.pps.first().map(|b| b & 0x1f), Some(NAL_PPS));
        assert_eq!(encoded.sps.get(1), Some(&66), "baseline profile");
        assert_eq!(encode(&video(5, 24, 32), 4).expect("again"), encoded, "deterministic");
        assert!(matches!(encode(&video(0, 24, 32), 4), Err(H264Error::NoFrames)));
    }

    #[test]
    fn short_data_is_an_error_not_a_panic() {
        let mut v = video(2, 16, 16);
        v.data.truncate(10);
        assert!(matches!(encode(&v, 2), Err(H264Error::ShortData { len: 10, .. })));
    }

    #[test]
    fn start_codes_are_stripped() {
        assert_eq!(strip_start_code(&[0, 0, 0, 1, 0x67, 1]), &[0x67, 1]);
        assert_eq!(strip_start_code(&[0, 0, 1, 0x68]), &[0x68]);
        assert_eq!(strip_start_code(&[0x65, 0, 0]), &[0x65, 0, 0]);
    }
}
