//! A tiny seeded random source for initial latents.
//!
//! Why our own: the same seed must give the same video on every host and every
//! version of every dependency, so the generator (PCG-XSH-RR 64/32) and the normal
//! transform (Box-Muller) are written down here instead of borrowed.

/// PCG-XSH-RR 64/32 with a fixed increment.
#[derive(Debug, Clone)]
pub struct Pcg32 {
    state: u64,
}

const MULTIPLIER: u64 = 6364136223846793005;
const INCREMENT: u64 = 1442695040888963407;

impl Pcg32 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = Pcg32 { state: 0 };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(MULTIPLIER).wrapping_add(INCREMENT);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// Uniform in the open interval (0, 1).
    pub fn next_open01(&mut self) -> f64 {
        (f64::from(self.next_u32()) + 0.5) / 4_294_967_296.0
    }

    /// `n` standard normal samples (Box-Muller, both outputs used).
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let (u1, u2) = (self.next_open01(), self.next_open01());
            let r = (-2.0 * u1.ln()).sqrt();
            let theta = std::f64::consts::TAU * u2;
            out.push((r * theta.cos()) as f32);
            out.push((r * theta.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        assert_eq!(Pcg32::new(42).normals(101), Pcg32::new(42).normals(101));
        assert_ne!(Pcg32::new(42).normals(8), Pcg32::new(43).normals(8));
    }

    #[test]
    fn normals_look_standard() {
        let xs = Pcg32::new(7).normals(20_000);
        let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
