//! Frame time stamps drawn into the picture, for glass-to-glass latency.
//!
//! The sender writes the wall-clock time (milliseconds, 40 bits) and an
//! 8-bit check into the luma plane as a row of black and white blocks along
//! the top edge of the picture. The blocks are large enough to survive H.264
//! at low bitrates. The receiver reads the centre pixel of each block of the
//! decoded frame, so the stamp measures everything between the two:
//! encoder, network, Janus, jitter buffer and decoder.

/// Number of bits in a stamp: 40 bits of time, 8 bits of check.
pub const BITS: u32 = 48;
const TIME_BITS: u32 = 40;
/// Height of the stamp row in pixels.
pub const ROW_HEIGHT: usize = 16;

/// Width of one block for a picture `width` pixels wide, or `None` when the
/// picture is too small to carry a stamp.
pub fn block_width(width: usize) -> Option<usize> {
    let w = (width / BITS as usize).min(16);
    (w >= 4).then_some(w)
}

fn check(time: u64) -> u8 {
    let b = time.to_le_bytes();
    b[..5].iter().fold(0xA5u8, |acc, x| acc.rotate_left(3) ^ x)
}

fn encode(time_ms: u64) -> u64 {
    let t = time_ms & ((1 << TIME_BITS) - 1);
    (t << 8) | u64::from(check(t))
}

/// Writes `time_ms` into a luma plane of `width` x `height` pixels with the
/// given row `stride`. Returns false if the picture is too small.
pub fn write(luma: &mut [u8], width: usize, height: usize, stride: usize, time_ms: u64) -> bool {
    let Some(bw) = block_width(width) else {
        return false;
    };
    if height < ROW_HEIGHT || stride < width || luma.len() < stride * ROW_HEIGHT {
        return false;
    }
    let code = encode(time_ms);
    for row in 0..ROW_HEIGHT {
        let line = &mut luma[row * stride..row * stride + width];
        for bit in 0..BITS as usize {
            let on = (code >> (BITS as usize - 1 - bit)) & 1 == 1;
            let v = if on { 235 } else { 16 };
            line[bit * bw..(bit + 1) * bw].fill(v);
        }
    }
    true
}

/// Reads a stamp back from a decoded luma plane. Returns `None` when there is
/// no valid stamp (the check does not match).
pub fn read(luma: &[u8], width: usize, height: usize, stride: usize) -> Option<u64> {
    let bw = block_width(width)?;
    if height < ROW_HEIGHT || stride < width || luma.len() < stride * ROW_HEIGHT {
        return None;
    }
    let row = ROW_HEIGHT / 2;
    let mut code = 0u64;
    for bit in 0..BITS as usize {
        let v = luma[row * stride + bit * bw + bw / 2];
        code = (code << 1) | u64::from(v >= 128);
    }
    let time = code >> 8;
    (check(time) == (code & 0xFF) as u8).then_some(time)
}

/// The sender's time in the same 40-bit space as stamps, for comparing with
/// a stamp read back: returns `now - stamp` in milliseconds, handling wrap.
pub fn age_ms(now_ms: u64, stamp: u64) -> u64 {
    let mask = (1u64 << TIME_BITS) - 1;
    (now_ms & mask).wrapping_sub(stamp) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let (w, h, stride) = (1280, 720, 1280);
        let mut y = vec![128u8; stride * h];
        let t = 1_795_000_123_456u64;
        assert!(write(&mut y, w, h, stride, t));
        assert_eq!(read(&y, w, h, stride), Some(t & ((1 << 40) - 1)));
        assert_eq!(age_ms(t + 42, read(&y, w, h, stride).expect("stamp")), 42);
    }

    #[test]
    fn survives_noise_and_small_pictures() {
        let (w, h, stride) = (640, 360, 672);
        let mut y = vec![0u8; stride * h];
        assert!(write(&mut y, w, h, stride, 99_999));
        for (i, p) in y.iter_mut().enumerate() {
            let noise = (i * 7919 % 41) as i32 - 20;
            *p = (*p as i32 + noise).clamp(0, 255) as u8;
        }
        assert_eq!(read(&y, w, h, stride), Some(99_999));
    }

    #[test]
    fn no_stamp_is_none_and_never_panics() {
        let y = vec![128u8; 1280 * 720];
        assert_eq!(read(&y, 1280, 720, 1280), None);
        assert_eq!(read(&y, 100, 10, 100), None);
        assert_eq!(read(&[], 1280, 720, 1280), None);
        let mut tiny = vec![0u8; 10];
        assert!(!write(&mut tiny, 1280, 720, 1280, 5));
    }

    #[test]
    fn wrap_around() {
        // The sender's clock passed the 40-bit boundary between the stamp
        // (4 ms before it) and now (5 ms after it): 9 ms in all.
        let mask = (1u64 << 40) - 1;
        assert_eq!(age_ms(mask + 5, mask - 4), 9);
        assert_eq!(age_ms(1 << 40, mask), 1);
    }
}
