//! The int8 activations' 256-entry lookup tables, in vector code on x86_64.
//!
//! Every hidden int8 convolution of edgedet's graph ends in a lookup table
//! from its pre-activation bytes to its output bytes (see [`super::graph`]).
//! tract-linalg 0.23.9 has a vector table kernel for arm64 only. On x86_64 it
//! runs its generic one, a byte at a time, and yolov4-tiny's 19 tables took
//! 2.5 ms of a 37 ms inference on one thread of an AMD EPYC (Zen 4).
//!
//! [`ShuffleLut`] is registered with tract-linalg's routine registry, so
//! tract's own `LookupTable` op runs it. On CPUs with AVX-512 VBMI it looks
//! up 64 bytes with two `vpermi2b` and one blend. On CPUs with AVX2 alone it
//! looks up 32 bytes with one `vpshufb` per 16-entry slice of the table.
//! Both give the same bytes as the table read one at a time, which the tests
//! check for every byte value.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use tract_linalg::isa::{Arch, Isa, IsaReq};
use tract_linalg::lut::LutKer;
use tract_linalg::routines::{lut_of, Func, Routine, RoutineFactory};

/// The kernel's name in tract's routine registry.
pub const KERNEL_NAME: &str = "edgedet_shuffle_lut_u8";

/// Bytes the kernel loop takes a multiple of. tract's `LutImpl` looks up
/// the remaining tail of a buffer one byte at a time.
const BLOCK: usize = 64;

#[derive(Clone, Debug, Hash)]
pub struct ShuffleLut;

/// The vector code this CPU runs, detected once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Vbmi,
    Avx2,
}

fn path() -> Path {
    static PATH: OnceLock<Path> = OnceLock::new();
    *PATH.get_or_init(|| {
        if is_x86_feature_detected!("avx512vbmi") && is_x86_feature_detected!("avx512bw") {
            Path::Vbmi
        } else {
            Path::Avx2
        }
    })
}

impl LutKer for ShuffleLut {
    fn name() -> &'static str {
        KERNEL_NAME
    }

    fn n() -> usize {
        BLOCK
    }

    fn input_alignment_bytes() -> usize {
        1
    }

    fn table_alignment_bytes() -> usize {
        64
    }

    unsafe fn run(buf: *mut u8, len: usize, table: *const u8) {
        // SAFETY: tract calls this with `len` a multiple of BLOCK bytes at
        // `buf` and a 256-byte table. The registry hands this kernel only to
        // CPUs with AVX2, and `path` chooses the VBMI loop only where it
        // detected AVX-512 VBMI and BW.
        unsafe {
            match path() {
                Path::Vbmi => run_vbmi(buf, len, table),
                Path::Avx2 => run_avx2(buf, len, table),
            }
        }
    }
}

/// Looks up 64 bytes at a time: `vpermi2b` indexes 128 bytes of table by the
/// low 7 bits of each byte, once for each half of the table, and the top bit
/// picks between the two results.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn run_vbmi(buf: *mut u8, len: usize, table: *const u8) {
    unsafe {
        let quarter = |i: usize| _mm512_loadu_si512(table.add(64 * i).cast());
        let (t0, t1, t2, t3) = (quarter(0), quarter(1), quarter(2), quarter(3));
        for offset in (0..len).step_by(64) {
            let at = buf.add(offset).cast::<__m512i>();
            let x = _mm512_loadu_si512(at.cast());
            let low = _mm512_permutex2var_epi8(t0, x, t1);
            let high = _mm512_permutex2var_epi8(t2, x, t3);
            let upper_half = _mm512_movepi8_mask(x);
            _mm512_storeu_si512(at.cast(), _mm512_mask_blend_epi8(upper_half, low, high));
        }
    }
}

/// Looks up 32 bytes at a time: `vpshufb` indexes each 16-byte slice of the
/// table by the low 4 bits, and a comparison of the high 4 bits with the
/// slice's number keeps the right one.
#[target_feature(enable = "avx2")]
unsafe fn run_avx2(buf: *mut u8, len: usize, table: *const u8) {
    unsafe {
        let mut slices = [_mm256_setzero_si256(); 16];
        for (i, slice) in slices.iter_mut().enumerate() {
            *slice = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.add(16 * i).cast()));
        }
        let nibble = _mm256_set1_epi8(0x0f);
        for offset in (0..len).step_by(32) {
            let at = buf.add(offset).cast::<__m256i>();
            let x = _mm256_loadu_si256(at);
            let low = _mm256_and_si256(x, nibble);
            let high = _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble);
            let mut out = _mm256_setzero_si256();
            for (i, slice) in slices.iter().enumerate() {
                let hit = _mm256_cmpeq_epi8(high, _mm256_set1_epi8(i as i8));
                out = _mm256_or_si256(out, _mm256_and_si256(hit, _mm256_shuffle_epi8(*slice, low)));
            }
            _mm256_storeu_si256(at, out);
        }
    }
}

// An architecture kernel outranks tract's generic one on every CPU that
// meets its requirement, so all x86_64 CPUs with AVX2 run this one.
inventory::submit! {
    Routine {
        func: Func::Lut,
        arch: Some(Arch::X86_64),
        isa: IsaReq::ANY.needing(&[Isa::X86_64Avx2]),
        boost: 0,
        round_trip: false,
        factory: RoutineFactory::LutU8 { name: <ShuffleLut as LutKer>::name, make: lut_of::<ShuffleLut> },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a table without a pattern that a wrong index could still match.
    fn table() -> Vec<u8> {
        (0..=255u8).map(|i| i.wrapping_mul(167).wrapping_add(29)).collect()
    }

    /// Returns every byte value at several offsets, then a tail shorter than a block.
    fn bytes() -> Vec<u8> {
        (0..5 * 256 + 37).map(|i| (i * 7 + i / 256) as u8).collect()
    }

    fn looked_up(run: unsafe fn(*mut u8, usize, *const u8)) -> Vec<u8> {
        let table = table();
        let mut data = bytes();
        let blocks = data.len() / BLOCK * BLOCK;
        unsafe { run(data.as_mut_ptr(), blocks, table.as_ptr()) };
        data.truncate(blocks);
        data
    }

    fn expected() -> Vec<u8> {
        let table = table();
        let data = bytes();
        data[..data.len() / BLOCK * BLOCK].iter().map(|&x| table[x as usize]).collect()
    }

    #[test]
    fn avx2_lookup_matches_scalar() {
        assert!(is_x86_feature_detected!("avx2"), "these tests expect an x86 CPU with AVX2");
        assert_eq!(looked_up(run_avx2), expected());
    }

    #[test]
    fn vbmi_lookup_matches_scalar() {
        if path() != Path::Vbmi {
            eprintln!("skipped: this CPU has no AVX-512 VBMI");
            return;
        }
        assert_eq!(looked_up(run_vbmi), expected());
    }

    #[test]
    fn tract_lookup_runs_this_kernel() {
        let table = table();
        let lut = tract_linalg::routines::lut_u8(&table).unwrap();
        assert!(format!("{lut:?}").contains("ShuffleLut"), "{lut:?}");
        // Through tract's own wrapper, with an unaligned start and a tail.
        let mut data = bytes();
        lut.run(&mut data[3..]);
        let expected: Vec<u8> =
            bytes().iter().enumerate().map(|(i, &x)| if i < 3 { x } else { table[x as usize] }).collect();
        assert_eq!(data, expected);
    }
}
