//! Turning decoded frames into files: the video as MP4 (`Video::to_mp4`, in the
//! `mp4` module, over `h264`), an animated GIF preview and a JSON metadata file, each
//! written atomically (temporary file, then rename).
//!
//! Why atomic: the reply carries the paths as soon as the generation returns, and a
//! reader must never see a half-written file, even if the worker dies mid-write.

use crate::error::{BoxError, EngineError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Decoded video frames, `[1, 3, F, H, W]` row-major, values in [-1, 1].
///
/// Public so that tools and tests can make the same files a worker makes from
/// frames of their own (e.g. a stand-in worker serving a real MP4).
#[derive(Debug)]
pub struct Video {
    /// The values, `[1, 3, F, H, W]` row-major.
    pub data: Vec<f32>,
    /// F.
    pub frames: usize,
    /// H, pixels.
    pub height: usize,
    /// W, pixels.
    pub width: usize,
}

/// Delay between frames, in hundredths of a second (8 fps).
const FRAME_DELAY_CS: u16 = 12;
/// Levels per channel of the fixed palette (6 x 7 x 6 = 252 colours).
const LEVELS: [usize; 3] = [6, 7, 6];
/// 4x4 Bayer matrix for ordered dithering.
const BAYER: [[u8; 4]; 4] = [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]];

/// The fixed global palette, RGB triplets.
///
/// Why fixed and not per-frame (NeuQuant): quantizing with a fixed colour cube plus
/// ordered dithering is a single pass per pixel (NeuQuant took ~75% of a 256x256x16
/// generation here), is deterministic by construction, and keeps the file small.
fn palette() -> Vec<u8> {
    let mut colours = Vec::with_capacity(256 * 3);
    for r in 0..LEVELS[0] {
        for g in 0..LEVELS[1] {
            for b in 0..LEVELS[2] {
                for (level, count) in [(r, LEVELS[0]), (g, LEVELS[1]), (b, LEVELS[2])] {
                    colours.push((level * 255 / (count - 1)) as u8);
                }
            }
        }
    }
    colours
}

/// Palette index of one dithered pixel.
fn palette_index(rgb: [u8; 3], x: usize, y: usize) -> u8 {
    let threshold = (f32::from(BAYER[y % 4][x % 4]) + 0.5) / 16.0 - 0.5;
    let mut index = 0;
    for (value, count) in rgb.into_iter().zip(LEVELS) {
        let scaled = f32::from(value) * (count - 1) as f32 / 255.0 + threshold;
        let level = (scaled.round().max(0.0) as usize).min(count - 1);
        index = index * count + level;
    }
    index as u8
}

impl Video {
    /// Palette indices of frame `f`.
    pub(crate) fn indexed_frame(&self, f: usize) -> Vec<u8> {
        let plane = self.height * self.width;
        let channel = |c: usize| (c * self.frames + f) * plane;
        let (r, g, b) = (channel(0), channel(1), channel(2));
        (0..plane)
            .map(|i| {
                let rgb = [to_byte(self.data[r + i]), to_byte(self.data[g + i]), to_byte(self.data[b + i])];
                palette_index(rgb, i % self.width, i / self.width)
            })
            .collect()
    }

    /// Frame `f` as interleaved 8-bit RGB (the caller checks that the data holds it).
    pub(crate) fn rgb_frame(&self, f: usize) -> Vec<u8> {
        let plane = self.height * self.width;
        let channel = |c: usize| (c * self.frames + f) * plane;
        let (r, g, b) = (channel(0), channel(1), channel(2));
        (0..plane).flat_map(|i| [self.data[r + i], self.data[g + i], self.data[b + i]].map(to_byte)).collect()
    }

    /// Encodes the first `frames` frames as a looping GIF with the fixed palette.
    pub fn to_gif(&self, frames: usize) -> Result<Vec<u8>, BoxError> {
        let (w, h) = (u16::try_from(self.width), u16::try_from(self.height));
        let (Ok(w), Ok(h)) = (w, h) else {
            return Err(format!("frame {}x{} exceeds GIF limits", self.width, self.height).into());
        };
        let need = 3 * self.frames * self.height * self.width;
        if self.data.len() < need {
            return Err(format!("frame data holds {} values, {need} needed", self.data.len()).into());
        }
        let mut bytes = Vec::new();
        {
            let mut encoder = gif::Encoder::new(&mut bytes, w, h, &palette())?;
            encoder.set_repeat(gif::Repeat::Infinite)?;
            for f in 0..frames.min(self.frames) {
                let frame = gif::Frame {
                    width: w,
                    height: h,
                    delay: FRAME_DELAY_CS,
                    buffer: std::borrow::Cow::Owned(self.indexed_frame(f)),
                    ..gif::Frame::default()
                };
                encoder.write_frame(&frame)?;
            }
        }
        Ok(bytes)
    }
}

fn to_byte(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, EngineError> {
    let path = dir.join(name);
    let fail = |e: std::io::Error| EngineError::Output { path: path.display().to_string(), source: Box::new(e) };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gif_round_trips_dimensions_and_frames() {
        let (frames, height, width) = (3, 8, 16);
        let data: Vec<f32> = (0..3 * frames * height * width).map(|i| ((i % 7) as f32 / 3.0) - 1.0).collect();
        let video = Video { data, frames, height, width };
        let bytes = video.to_gif(frames).expect("encode");
        assert_eq!(&bytes[..6], b"GIF89a");
        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::RGBA);
        let mut decoder = options.read_info(&bytes[..]).expect("decode");
        assert_eq!((decoder.width(), decoder.height()), (16, 8));
        let mut count = 0;
        while decoder.read_next_frame().expect("frame").is_some() {
            count += 1;
        }
        assert_eq!(count, 3);
    }

    fn gradient(frames: usize, height: usize, width: usize) -> Video {
        let data = (0..3 * frames * height * width).map(|i| ((i % 11) as f32 / 5.0) - 1.0).collect();
        Video { data, frames, height, width }
    }

    /// Offset of the first top-level box of `kind`.
    fn box_at(file: &[u8], kind: &[u8; 4]) -> Option<usize> {
        let mut at = 0;
        while at + 8 <= file.len() {
            let size = u32::from_be_bytes(file[at..at + 4].try_into().ok()?) as usize;
            if &file[at + 4..at + 8] == kind {
                return Some(at);
            }
            at += size.max(8);
        }
        None
    }

    #[test]
    fn mp4_is_faststart_with_one_h264_sample_per_frame() {
        use mp4_atom::ReadFrom;
        let video = gradient(6, 24, 32);
        let bytes = video.to_mp4(5).expect("encode");
        assert_eq!(&bytes[4..8], b"ftyp", "starts with ftyp");
        let (moov, mdat) = (box_at(&bytes, b"moov").expect("moov"), box_at(&bytes, b"mdat").expect("mdat"));
        assert!(moov < mdat, "moov before mdat");
        let mut cursor = std::io::Cursor::new(&bytes);
        mp4_atom::Ftyp::read_from(&mut cursor).expect("ftyp");
        let moov = mp4_atom::Moov::read_from(&mut cursor).expect("moov");
        let stbl = &moov.trak[0].mdia.minf.stbl;
        let mp4_atom::StszSamples::Different { sizes } = &stbl.stsz.samples else { panic!("sample sizes") };
        assert_eq!(sizes.len(), 5, "one sample per frame asked for");
        let Some(mp4_atom::Codec::Avc1(avc1)) = stbl.stsd.codecs.first() else { panic!("an avc1 entry") };
        assert_eq!((avc1.visual.width, avc1.visual.height), (32, 24));
        assert_eq!(stbl.stts.entries[0].sample_delta * crate::FPS, moov.trak[0].mdia.mdhd.timescale);

        // Round trip: OpenH264's decoder turns every sample back into a 32x24 picture.
        let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
        let annex_b = |nal: &[u8]| [&[0, 0, 0, 1][..], nal].concat();
        let mut stream =
            [annex_b(&avc1.avcc.sequence_parameter_sets[0]), annex_b(&avc1.avcc.picture_parameter_sets[0])].concat();
        let mut offset = stbl.stco.as_ref().expect("stco").entries[0] as usize;
        let mut pictures = 0;
        for &size in sizes {
            let mut sample = &bytes[offset..offset + size as usize];
            offset += size as usize;
            while sample.len() > 4 {
                let len = u32::from_be_bytes([sample[0], sample[1], sample[2], sample[3]]) as usize;
                stream.extend_from_slice(&annex_b(&sample[4..4 + len]));
                sample = &sample[4 + len..];
            }
            if let Some(picture) = decoder.decode(&stream).expect("decodes") {
                use openh264::formats::YUVSource;
                assert_eq!(picture.dimensions(), (32, 24));
                pictures += 1;
            }
            stream.clear();
        }
        pictures += decoder.flush_remaining().expect("flush").len();
        assert_eq!(pictures, 5);
    }

    #[test]
    fn odd_sizes_are_refused_with_the_size_in_the_message() {
        let error = gradient(2, 24, 31).to_mp4(2).unwrap_err();
        assert!(error.to_string().contains("31x24") && error.to_string().contains("even"), "{error}");
        let short = Video { data: vec![0.0; 5], frames: 2, height: 16, width: 16 };
        assert!(short.to_mp4(2).is_err() && short.to_gif(2).is_err(), "short data is an error, not a panic");
    }

    #[test]
    fn palette_covers_the_corners() {
        let p = palette();
        assert_eq!(p.len(), 252 * 3);
        assert_eq!(&p[..3], &[0, 0, 0]);
        assert_eq!(&p[p.len() - 3..], &[255, 255, 255]);
        assert_eq!(palette_index([0, 0, 0], 0, 0), 0);
        assert_eq!(palette_index([255, 255, 255], 3, 3), 251);
    }

    #[test]
    fn bytes_clamp() {
        assert_eq!([to_byte(-2.0), to_byte(0.0), to_byte(1.0), to_byte(f32::NAN)], [0, 128, 255, 0]);
    }

    #[test]
    fn atomic_write_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("warmlane-atomic-{}", std::process::id()));
        let path = write_atomic(&dir, "a.json", b"{}").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"{}");
        let names: Vec<_> = std::fs::read_dir(&dir).expect("dir").filter_map(|e| e.ok()).collect();
        assert_eq!(names.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
