//! Muxing an encoded H.264 clip into a progressive MP4: `ftyp`, then `moov`, then
//! one `mdat` holding every sample as a single chunk.
//!
//! Why `moov` first ("faststart"): a browser playing from an HTTP URL learns the
//! sample tables before the media data arrives, so it starts playing after the first
//! bytes instead of fetching the file's end first. The boxes are built with
//! `mp4-atom`; the chunk offset depends on the size of `moov` itself, so `moov` is
//! encoded once to measure it and again with the real offset (a 32-bit `stco` entry
//! has the same size either way).

use crate::error::BoxError;
use crate::h264::{EncodedVideo, FPS};
use crate::output::Video;
use mp4_atom::{
    Avc1, Avcc, Dinf, Dref, Encode, FourCC, Ftyp, Hdlr, Mdhd, Mdia, Minf, Moov, Mvhd, Stbl, Stco, Stsc, StscEntry,
    Stsd, Stss, Stsz, StszSamples, Stts, SttsEntry, Tkhd, Trak, Url, Visual, Vmhd,
};

/// Ticks per second of the track: a whole number of ticks per frame at [`FPS`].
const TIMESCALE: u32 = FPS * 1000;
/// Ticks per second of the movie header (milliseconds).
const MOVIE_TIMESCALE: u32 = 1000;

/// Why the boxes could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MuxError {
    /// `mp4-atom` refused a box.
    #[error("encoding the {0} box")]
    Box(&'static str, #[source] mp4_atom::Error),
    /// A size or offset does not fit the 32-bit fields used here (`stco`, `stsz`).
    #[error("{what} of {value} bytes does not fit an MP4 32-bit field")]
    TooLarge {
        /// What overflowed.
        what: &'static str,
        /// Its size.
        value: usize,
    },
    /// The clip has no samples.
    #[error("no samples to mux")]
    Empty,
}

impl Video {
    /// Encodes the first `frames` frames as an MP4: H.264 constrained baseline,
    /// yuv420p (BT.601, limited range), [`crate::FPS`] frames per second,
    /// `moov` before `mdat`. Odd or out-of-range sides are refused, never padded.
    pub fn to_mp4(&self, frames: usize) -> Result<Vec<u8>, BoxError> {
        let encoded = crate::h264::encode(self, frames)?;
        Ok(mux(&encoded)?)
    }
}

/// The whole MP4 file for `video`.
pub(crate) fn mux(video: &EncodedVideo) -> Result<Vec<u8>, MuxError> {
    if video.samples.is_empty() {
        return Err(MuxError::Empty);
    }
    let mut out = Vec::new();
    ftyp().encode(&mut out).map_err(|e| MuxError::Box("ftyp", e))?;
    let mut sizing = Vec::new();
    moov(video, 0)?.encode(&mut sizing).map_err(|e| MuxError::Box("moov", e))?;
    let data_len: usize = video.samples.iter().map(|s| s.data.len()).sum();
    let mdat_header = 8;
    let first_sample = out.len() + sizing.len() + mdat_header;
    let offset = fits("the chunk offset", first_sample)?;
    fits("the file", first_sample + data_len)?;
    moov(video, offset)?.encode(&mut out).map_err(|e| MuxError::Box("moov", e))?;
    out.reserve(mdat_header + data_len);
    out.extend_from_slice(&fits("mdat", mdat_header + data_len)?.to_be_bytes());
    out.extend_from_slice(b"mdat");
    for sample in &video.samples {
        out.extend_from_slice(&sample.data);
    }
    debug_assert_eq!(out.len(), first_sample + data_len);
    Ok(out)
}

fn fits(what: &'static str, value: usize) -> Result<u32, MuxError> {
    u32::try_from(value).map_err(|_| MuxError::TooLarge { what, value })
}

/// `isom` with the brands browsers and players look for.
fn ftyp() -> Ftyp {
    Ftyp {
        major_brand: FourCC::new(b"isom"),
        minor_version: 512,
        compatible_brands: [b"isom", b"iso2", b"avc1", b"mp41"].into_iter().map(FourCC::new).collect(),
    }
}

/// The movie box for one video track whose samples form one chunk at `offset`.
fn moov(video: &EncodedVideo, offset: u32) -> Result<Moov, MuxError> {
    let count = fits("the sample count", video.samples.len())?;
    let ticks_per_frame = TIMESCALE / FPS;
    let duration = u64::from(count) * u64::from(ticks_per_frame);
    let movie_duration = duration * u64::from(MOVIE_TIMESCALE) / u64::from(TIMESCALE);
    let (width, height) = (side(video.width)?, side(video.height)?);
    let sizes = video.samples.iter().map(|s| fits("a sample", s.data.len())).collect::<Result<Vec<_>, _>>()?;
    let keys: Vec<u32> = (1..=count).zip(&video.samples).filter(|(_, s)| s.key).map(|(n, _)| n).collect();
    let stbl = Stbl {
        stsd: Stsd { codecs: vec![avc1(video, width, height).into()] },
        stts: Stts { entries: vec![SttsEntry { sample_count: count, sample_delta: ticks_per_frame }] },
        // Every sample is a sync sample when no `stss` is written.
        stss: (keys.len() < video.samples.len()).then_some(Stss { entries: keys }),
        stsc: Stsc {
            entries: vec![StscEntry { first_chunk: 1, samples_per_chunk: count, sample_description_index: 1 }],
        },
        stsz: Stsz { samples: StszSamples::Different { sizes } },
        stco: Some(Stco { entries: vec![offset] }),
        ..Default::default()
    };
    let trak = Trak {
        tkhd: Tkhd {
            track_id: 1,
            duration: movie_duration,
            enabled: true,
            in_movie: true,
            width: width.into(),
            height: height.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale: TIMESCALE, duration, language: "und".into(), ..Default::default() },
            hdlr: Hdlr { handler: FourCC::new(b"vide"), name: "warmlane video".into() },
            minf: Minf {
                vmhd: Some(Vmhd::default()),
                dinf: Dinf { dref: Dref { entries: vec![Url::default().into()] } },
                stbl,
                ..Default::default()
            },
        },
        ..Default::default()
    };
    Ok(Moov {
        mvhd: Mvhd {
            timescale: MOVIE_TIMESCALE,
            duration: movie_duration,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: 2,
            ..Default::default()
        },
        trak: vec![trak],
        ..Default::default()
    })
}

fn side(pixels: usize) -> Result<u16, MuxError> {
    u16::try_from(pixels).map_err(|_| MuxError::TooLarge { what: "a frame side", value: pixels })
}

/// The sample entry: `avc1` with the decoder configuration (`avcC`) from the SPS/PPS.
fn avc1(video: &EncodedVideo, width: u16, height: u16) -> Avc1 {
    let byte = |i: usize| video.sps.get(i).copied().unwrap_or(0);
    Avc1 {
        visual: Visual { data_reference_index: 1, width, height, ..Default::default() },
        avcc: Avcc {
            configuration_version: 1,
            avc_profile_indication: byte(1),
            profile_compatibility: byte(2),
            avc_level_indication: byte(3),
            length_size: 4,
            sequence_parameter_sets: vec![video.sps.clone()],
            picture_parameter_sets: vec![video.pps.clone()],
            ext: None,
        },
        btrt: None,
        colr: None,
        pasp: None,
        taic: None,
        fiel: None,
        spatial: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::Sample;
    use mp4_atom::ReadFrom;

    /// A clip of `n` fake samples (the muxer never looks inside them).
    fn clip(n: usize) -> EncodedVideo {
        EncodedVideo {
            width: 32,
            height: 24,
            sps: vec![0x67, 66, 0xc0, 12, 1],
            pps: vec![0x68, 2],
            samples: (0..n).map(|i| Sample { data: vec![0, 0, 0, 2, 0x65, i as u8], key: i == 0 }).collect(),
        }
    }

    /// Top-level boxes as (kind, offset, size).
    fn boxes(file: &[u8]) -> Vec<(String, usize, usize)> {
        let mut out = vec![];
        let mut at = 0;
        while at + 8 <= file.len() {
            let size = u32::from_be_bytes([file[at], file[at + 1], file[at + 2], file[at + 3]]) as usize;
            out.push((String::from_utf8_lossy(&file[at + 4..at + 8]).into_owned(), at, size));
            if size < 8 {
                break;
            }
            at += size;
        }
        out
    }

    #[test]
    fn ftyp_then_moov_then_mdat_covering_the_file() {
        let file = mux(&clip(3)).expect("mux");
        let kinds: Vec<_> = boxes(&file).into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(kinds, ["ftyp", "moov", "mdat"]);
        let (_, at, size) = boxes(&file)[2].clone();
        assert_eq!(at + size, file.len(), "mdat runs to the end");
    }

    #[test]
    fn sample_tables_point_into_mdat() {
        let video = clip(5);
        let file = mux(&video).expect("mux");
        let mut cursor = std::io::Cursor::new(&file);
        Ftyp::read_from(&mut cursor).expect("ftyp");
        let moov = Moov::read_from(&mut cursor).expect("moov");
        let stbl = &moov.trak[0].mdia.minf.stbl;
        let StszSamples::Different { sizes } = &stbl.stsz.samples else { panic!("sizes per sample") };
        assert_eq!(sizes.len(), 5);
        let offset = stbl.stco.as_ref().expect("stco").entries[0] as usize;
        assert_eq!(&file[offset - 4..offset], b"mdat");
        assert_eq!(&file[offset..offset + 6], &video.samples[0].data[..]);
        assert_eq!(stbl.stss.as_ref().expect("stss").entries, vec![1]);
        assert_eq!(stbl.stts.entries[0].sample_count, 5);
        assert_eq!(moov.mvhd.duration, 5 * 1000 / u64::from(FPS));
        let Some(mp4_atom::Codec::Avc1(avc1)) = stbl.stsd.codecs.first() else { panic!("avc1") };
        assert_eq!((avc1.visual.width, avc1.visual.height), (32, 24));
        assert_eq!(avc1.avcc.sequence_parameter_sets, vec![video.sps.clone()]);
    }

    #[test]
    fn empty_and_huge_clips_are_errors() {
        assert!(matches!(mux(&clip(0)), Err(MuxError::Empty)));
        let mut wide = clip(1);
        wide.width = 70_000;
        assert!(matches!(mux(&wide), Err(MuxError::TooLarge { what: "a frame side", .. })));
    }
}
