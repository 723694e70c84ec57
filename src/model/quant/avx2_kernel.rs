//! An int8 matrix kernel for x86 CPUs that have AVX2 but no VNNI, plugged
//! into tract's kernel dispatch.
//!
//! tract 0.23.9 runs int8 matrix products on such CPUs with its
//! `avx2_mmm_i32_8x8` kernel. That kernel loads its operands with a legacy
//! SSE `movq` between AVX2 instructions. On an AMD EPYC VM with AVX2 and no
//! VNNI, each such switch cost about 100 ns, and int8 yolov4-tiny ran 55 times
//! slower than f32. No setting of tract avoids it, so edgedet brings
//! its own kernel, written with Rust's AVX2 intrinsics, which the compiler
//! encodes as VEX throughout.
//!
//! The kernel reads both operands in tract's `PackedI8K4` layout (four
//! consecutive k of one row side by side), the layout of tract's VNNI
//! kernels, so tract packs the weights and our `Im2colI8K4` packs the
//! activations. For each block of 4 k it multiplies one row's 4 weights,
//! broadcast, by 8 columns with `vpmaddubsw`, which takes one unsigned and
//! one signed operand, and sums the pairs of products into 32 bits with
//! `vpmaddwd`. The columns are made unsigned by taking their absolute value
//! once per block, and their signs move onto the weights (`vpabsb`,
//! `vpsignb`). A pair of products then stays within i16 as long as no weight
//! is −128: 2 · 128 · 127 = 32512. edgedet's quantizer keeps weights within
//! −127..127. A panel that contains −128 anyway (an int8 model made by another
//! tool) is detected and recomputed exactly in scalar code, so results never
//! depend on where the weights came from.
//!
//! The tile stays in eight vectors from the products to the store. The fused
//! operations of every quantized convolution (bias, requantization with
//! round-half-to-even, zero point, clamp, i8 store) are vector code, and the
//! rarer ones go through tract's own scalar routines. A first version did
//! all of them in scalar code and spent half of its time there.
//!
//! Known limits were measured on that AMD EPYC VM, with panels
//! in the L1 cache. This inner loop does 71 G products a second on one core.
//! The same loop broadcasting B instead of A does 60 G, tract's f32 FMA
//! kernel 50 G, and a plain `vpmaddubsw` loop without the sign trick 95 G.
//! That plain form needs the weights within 7 bits, as ONNX Runtime's
//! `reduce_range` does for the same reason. Weights quantized to −63..63
//! would let the kernel skip `vpsignb`: B would be offset to unsigned once
//! per block, and the offset taken back through the bias. That costs one bit
//! of weight precision, which the accuracy tests would have to accept.
//! With the loop that broadcast B, the 13×13 layers of yolov4-tiny ran at
//! a third of its rate in `bench --profile`. Their 1.2 MB of weights are
//! larger than that CPU's 512 KB L2 cache, and tract sizes its cache blocks
//! for 4-byte accumulators, so blocks sized for int8 panels are the next
//! thing to try.

use std::arch::x86_64::*;

use tract_core::internal::DatumType;
use tract_linalg::isa::{Arch, Isa, IsaReq, IsaSet};
use tract_linalg::mmm::{DynKernel, FusedKerSpec, MatMatMul, OutputStoreKer, Query, RoundingPolicy, Suitable};
use tract_linalg::mmm_routines::MmmRoutine;
use tract_linalg::mmm_tiers::MmmTier;
use tract_linalg::pack::PackedI8K4;
use tract_linalg::{ScaleShiftAndRound, Scaler};

/// The kernel's name in tract's plans and profiles.
pub const KERNEL_NAME: &str = "edgedet_avx2_i32_8x8";

/// Rows of the tile: output channels of a convolution.
const MR: usize = 8;
/// Columns of the tile: output pixels of a convolution.
const NR: usize = 8;
/// Bytes of one block of 4 k in a panel of either operand.
const BLOCK: usize = 4 * MR;

/// Checks whether tract's dispatch on a machine with `isa` hands int8
/// products to this kernel: AVX2 without any of the int8 dot products that
/// tract's own kernels use where they exist.
pub fn serves(isa: &IsaSet) -> bool {
    isa.has(Isa::X86_64Avx2)
        && !isa.has(Isa::X86_64AvxVnni)
        && !isa.has(Isa::X86_64Avx512Vnni)
        && !isa.has(Isa::X86_64AmxInt8)
}

fn make() -> Box<dyn MatMatMul> {
    DynKernel::<MR, NR, i32> {
        name: KERNEL_NAME.to_string(),
        kernel,
        arch: Some(Arch::X86_64),
        emulated: || false,
        packings: vec![(Box::new(PackedI8K4::new(MR)), Box::new(PackedI8K4::new(NR)))],
        stores: vec![DatumType::I32, DatumType::I8],
        built: true,
        isa: IsaReq::ANY.needing(&[Isa::X86_64Avx2]),
        boost: || 0,
        can_fuse: |_| true,
        row_major_store: false,
    }
    .mmm()
}

fn preferred(_isa: &IsaSet, accumulator: DatumType, _query: &Query, _suitable: &[Suitable]) -> Option<&'static str> {
    (accumulator == DatumType::I32).then_some(KERNEL_NAME)
}

inventory::submit! {
    MmmRoutine { make }
}

// tract's x86 tiers use precedences 1 to 8, and its "avx2" tier names
// `avx2_mmm_i32_8x8` for every int8 product. This tier is asked first, but
// only speaks where `serves` holds, so CPUs with VNNI or AMX keep tract's
// kernels.
inventory::submit! {
    MmmTier {
        arch: Some(Arch::X86_64),
        precedence: 9,
        name: "edgedet-avx2-int8",
        applies: serves,
        preferred,
    }
}

/// Runs one tile's list of fused operations, as tract's frame hands it over.
/// Returns 0 when done, and 1 for an operation this kernel does not offer,
/// which tract reports as an error.
unsafe fn kernel(specs: &[FusedKerSpec<i32>]) -> isize {
    // SAFETY: tract's dispatch gives this kernel only to CPUs with AVX2 (the
    // `isa` of `make`), and every pointer in `specs` comes from tract's
    // frame, which sizes it for an MR × NR tile and the packing of `make`.
    unsafe { run_specs(specs) }
}

/// Runs the fused operations on a tile kept as eight vectors, one row of
/// eight columns each, from the products to the store. The operations every quantized convolution ends
/// with are vector code: bias, requantization with round-half-to-even, zero
/// point, clamp and i8 store. The others go through [`Lanes`] and tract's
/// own scalar routines.
#[target_feature(enable = "avx2")]
unsafe fn run_specs(specs: &[FusedKerSpec<i32>]) -> isize {
    let mut tile = [_mm256_setzero_si256(); MR];
    for spec in specs {
        // SAFETY: see `kernel`.
        unsafe {
            match *spec {
                FusedKerSpec::Done => break,
                FusedKerSpec::Clear => tile = [_mm256_setzero_si256(); MR],
                FusedKerSpec::LoadTile(column_major, _) => {
                    for (row, values) in tile.iter_mut().enumerate() {
                        let lanes = Lanes(std::array::from_fn(|column| *column_major.add(column * MR + row)));
                        *values = lanes.vector();
                    }
                }
                // tract's convention: the operation's operand comes first,
                // so `ScalarSub(m)` leaves m − x and `ScalarSubF(m)` x − m.
                FusedKerSpec::ScalarMin(m) => each(&mut tile, _mm256_set1_epi32(m), _mm256_min_epi32),
                FusedKerSpec::ScalarMax(m) => each(&mut tile, _mm256_set1_epi32(m), _mm256_max_epi32),
                FusedKerSpec::ScalarAdd(m) => each(&mut tile, _mm256_set1_epi32(m), _mm256_add_epi32),
                FusedKerSpec::ScalarMul(m) => each(&mut tile, _mm256_set1_epi32(m), _mm256_mullo_epi32),
                FusedKerSpec::ScalarSub(m) => each(&mut tile, _mm256_set1_epi32(m), _mm256_sub_epi32),
                FusedKerSpec::ScalarSubF(m) => each(&mut tile, _mm256_set1_epi32(m), sub_flipped),
                FusedKerSpec::LeakyRelu(m) => each(&mut tile, _mm256_set1_epi32(m), leaky_relu),
                FusedKerSpec::PerRowMin(v) => per_row(&mut tile, v, _mm256_min_epi32),
                FusedKerSpec::PerRowMax(v) => per_row(&mut tile, v, _mm256_max_epi32),
                FusedKerSpec::PerRowAdd(v) => per_row(&mut tile, v, _mm256_add_epi32),
                FusedKerSpec::PerRowMul(v) => per_row(&mut tile, v, _mm256_mullo_epi32),
                FusedKerSpec::PerRowSub(v) => per_row(&mut tile, v, _mm256_sub_epi32),
                FusedKerSpec::PerRowSubF(v) => per_row(&mut tile, v, sub_flipped),
                FusedKerSpec::PerColMin(v) => each(&mut tile, load(v), _mm256_min_epi32),
                FusedKerSpec::PerColMax(v) => each(&mut tile, load(v), _mm256_max_epi32),
                FusedKerSpec::PerColAdd(v) => each(&mut tile, load(v), _mm256_add_epi32),
                FusedKerSpec::PerColMul(v) => each(&mut tile, load(v), _mm256_mullo_epi32),
                FusedKerSpec::PerColSub(v) => each(&mut tile, load(v), _mm256_sub_epi32),
                FusedKerSpec::PerColSubF(v) => each(&mut tile, load(v), sub_flipped),
                FusedKerSpec::QScale(shift, policy, multiplier) => {
                    let right = shift + 31;
                    if policy == RoundingPolicy::Even && multiplier > 0 && (32..=62).contains(&right) {
                        for values in tile.iter_mut() {
                            *values = scale_half_even(*values, multiplier, right as i64);
                        }
                    } else {
                        let scaler = Scaler::from_fuse_params(shift, policy, multiplier);
                        each_lane(&mut tile, |x| x.q_scale(scaler));
                    }
                }
                FusedKerSpec::RoundingShiftRight(shift, policy) => each_lane(&mut tile, |x| x.q_shr(shift, policy)),
                FusedKerSpec::ShiftLeft(shift) => {
                    let count = _mm_cvtsi64_si128(shift as i64);
                    for values in tile.iter_mut() {
                        *values = _mm256_sll_epi32(*values, count);
                    }
                }
                FusedKerSpec::AddRowColProducts(rows, columns) => {
                    let columns = load(columns);
                    for (row, values) in tile.iter_mut().enumerate() {
                        let product = _mm256_mullo_epi32(_mm256_set1_epi32(*rows.add(row)), columns);
                        *values = _mm256_add_epi32(*values, product);
                    }
                }
                FusedKerSpec::AddUnicast(other) => {
                    // Reading through `at` is only sound for addresses of `other`'s tile.
                    let read: unsafe fn(*const u8) -> i32 = match other.item_size {
                        1 => |at| i32::from(*(at as *const i8)),
                        4 => |at| (at as *const i32).read_unaligned(),
                        _ => return 1,
                    };
                    for (row, values) in tile.iter_mut().enumerate() {
                        let mut lanes = Lanes::of(*values);
                        for (column, value) in lanes.0.iter_mut().enumerate() {
                            *value = value.wrapping_add(read(other.at(row, column)));
                        }
                        *values = lanes.vector();
                    }
                }
                FusedKerSpec::Store(output) => match output.item_size {
                    1 => store_low_bytes(&tile, &output),
                    4 => store_i32(&tile, &output),
                    _ => return 1,
                },
                FusedKerSpec::AddMatMul { k, pa, pb, packing } => {
                    if packing != 0 {
                        return 1;
                    }
                    add_mat_mul(&mut tile, pa, pb, k.div_ceil(4));
                }
            }
        }
    }
    0
}

/// One row of the tile as eight plain values, for the rare operations that
/// go through scalar code.
struct Lanes([i32; MR]);

impl Lanes {
    #[target_feature(enable = "avx2")]
    fn of(values: __m256i) -> Lanes {
        let mut lanes = [0i32; MR];
        // SAFETY: `lanes` has room for the 32 bytes written.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, values) };
        Lanes(lanes)
    }

    #[target_feature(enable = "avx2")]
    fn vector(&self) -> __m256i {
        // SAFETY: `self.0` is the 32 bytes read.
        unsafe { _mm256_loadu_si256(self.0.as_ptr() as *const __m256i) }
    }
}

/// The address of one value of a tile in tract's output layout.
trait TileAt {
    fn at(&self, row: usize, column: usize) -> *mut u8;
}

impl TileAt for OutputStoreKer {
    fn at(&self, row: usize, column: usize) -> *mut u8 {
        self.ptr.wrapping_offset(self.row_byte_stride * row as isize + self.col_byte_stride * column as isize)
    }
}

#[target_feature(enable = "avx2")]
fn sub_flipped(operand: __m256i, values: __m256i) -> __m256i {
    _mm256_sub_epi32(values, operand)
}

#[target_feature(enable = "avx2")]
fn leaky_relu(operand: __m256i, values: __m256i) -> __m256i {
    let positive = _mm256_cmpgt_epi32(values, _mm256_setzero_si256());
    _mm256_blendv_epi8(_mm256_mullo_epi32(operand, values), values, positive)
}

/// # Safety
/// `values` must point to MR values.
#[target_feature(enable = "avx2")]
unsafe fn load(values: *const i32) -> __m256i {
    unsafe { _mm256_loadu_si256(values as *const __m256i) }
}

#[target_feature(enable = "avx2")]
fn each(tile: &mut [__m256i; MR], operand: __m256i, f: unsafe fn(__m256i, __m256i) -> __m256i) {
    for values in tile.iter_mut() {
        // SAFETY: `f` is an AVX2 intrinsic or one of the AVX2 operations
        // above, and this function runs with AVX2.
        *values = unsafe { f(operand, *values) };
    }
}

/// # Safety
/// `operands` must point to MR values.
#[target_feature(enable = "avx2")]
unsafe fn per_row(tile: &mut [__m256i; MR], operands: *const i32, f: unsafe fn(__m256i, __m256i) -> __m256i) {
    for (row, values) in tile.iter_mut().enumerate() {
        // SAFETY: as for `each`, and row < MR.
        *values = unsafe { f(_mm256_set1_epi32(*operands.add(row)), *values) };
    }
}

#[target_feature(enable = "avx2")]
fn each_lane(tile: &mut [__m256i; MR], f: impl Fn(i32) -> i32) {
    for values in tile.iter_mut() {
        let mut lanes = Lanes::of(*values);
        lanes.0.iter_mut().for_each(|value| *value = f(*value));
        *values = lanes.vector();
    }
}

/// tract's `QScale` with `RoundingPolicy::Even` for a positive multiplier:
/// sign(x) · round_half_even(multiplier · |x| / 2^right), computed in 64
/// bits. `right` must be within 32..=62 so that the result fits in i32.
#[target_feature(enable = "avx2")]
fn scale_half_even(values: __m256i, multiplier: i32, right: i64) -> __m256i {
    let magnitude = _mm256_abs_epi32(values);
    let multiplier = _mm256_set1_epi64x(i64::from(multiplier));
    let count = _mm_cvtsi64_si128(right);
    let half_less_one = _mm256_set1_epi64x((1i64 << (right - 1)) - 1);
    let low_bit = _mm256_set1_epi64x(1);
    let round = |product: __m256i| {
        // Adding half − 1, plus one more when the truncated result is odd,
        // rounds a tie to the even neighbour and everything else to nearest.
        let odd = _mm256_and_si256(_mm256_srl_epi64(product, count), low_bit);
        _mm256_srl_epi64(_mm256_add_epi64(_mm256_add_epi64(product, half_less_one), odd), count)
    };
    // `vpmuludq` multiplies the even 32-bit lanes; the odd ones are shifted down first.
    let even = round(_mm256_mul_epu32(magnitude, multiplier));
    let odd = round(_mm256_mul_epu32(_mm256_srli_epi64::<32>(magnitude), multiplier));
    let scaled = _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd));
    _mm256_sign_epi32(scaled, values)
}

/// Stores the low byte of every value, as tract's kernels do for an i8
/// output: the clamp to −128..127 is one of the fused operations before it.
///
/// # Safety
/// `output` must describe an MR × NR tile of writable bytes.
#[target_feature(enable = "avx2")]
unsafe fn store_low_bytes(tile: &[__m256i; MR], output: &OutputStoreKer) {
    // Bytes 0, 4, 8 and 12 of each 128-bit half, then the two halves' first
    // 32 bits side by side: the eight low bytes in column order.
    let pick = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        -1, -1, -1,
    );
    let gather = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
    let rows = tile
        .map(|values| _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(values, pick), gather)));
    if output.row_byte_stride == 1 {
        // SAFETY: the caller's promise.
        unsafe { store_transposed_bytes(&rows, output) };
        return;
    }
    for (row, bytes) in rows.iter().enumerate() {
        let bytes = _mm_cvtsi128_si64(*bytes).to_le_bytes();
        // SAFETY: the caller's promise.
        unsafe {
            if output.col_byte_stride == 1 {
                (output.at(row, 0) as *mut [u8; NR]).write_unaligned(bytes);
            } else {
                for (column, byte) in bytes.into_iter().enumerate() {
                    *output.at(row, column) = byte;
                }
            }
        }
    }
}

/// Stores an 8 × 8 tile of bytes, one row per vector's low 8 bytes, to an
/// output whose rows are adjacent bytes: each column then is 8 contiguous
/// bytes. tract lays out some 1×1 convolutions that way (pixels as rows),
/// such as layer 7 of yolov4-tiny. Stored byte by byte, that layer took
/// 1.60 ms on one thread instead of 1.43.
///
/// # Safety
/// `output` must describe an MR × NR tile of writable bytes with a row stride of 1.
#[target_feature(enable = "avx2")]
unsafe fn store_transposed_bytes(rows: &[__m128i; MR], output: &OutputStoreKer) {
    // Interleaving bytes, then pairs, then fours of rows turns the rows into columns.
    let pairs = [0, 2, 4, 6].map(|row| _mm_unpacklo_epi8(rows[row], rows[row + 1]));
    let fours = [
        _mm_unpacklo_epi16(pairs[0], pairs[1]),
        _mm_unpackhi_epi16(pairs[0], pairs[1]),
        _mm_unpacklo_epi16(pairs[2], pairs[3]),
        _mm_unpackhi_epi16(pairs[2], pairs[3]),
    ];
    let columns = [
        _mm_unpacklo_epi32(fours[0], fours[2]),
        _mm_unpackhi_epi32(fours[0], fours[2]),
        _mm_unpacklo_epi32(fours[1], fours[3]),
        _mm_unpackhi_epi32(fours[1], fours[3]),
    ];
    for (pair, two_columns) in columns.iter().enumerate() {
        // SAFETY: the caller's promise; each column is 8 bytes from `at(0, column)`.
        unsafe {
            _mm_storel_epi64(output.at(0, 2 * pair) as *mut __m128i, *two_columns);
            _mm_storeh_pd(output.at(0, 2 * pair + 1) as *mut f64, _mm_castsi128_pd(*two_columns));
        }
    }
}

/// # Safety
/// `output` must describe an MR × NR tile of writable i32 values.
#[target_feature(enable = "avx2")]
unsafe fn store_i32(tile: &[__m256i; MR], output: &OutputStoreKer) {
    for (row, values) in tile.iter().enumerate() {
        // SAFETY: the caller's promise.
        unsafe {
            if output.col_byte_stride == 4 {
                _mm256_storeu_si256(output.at(row, 0) as *mut __m256i, *values);
            } else {
                for (column, value) in Lanes::of(*values).0.into_iter().enumerate() {
                    (output.at(row, column) as *mut i32).write_unaligned(value);
                }
            }
        }
    }
}

/// Adds the products of an A panel (MR rows) and a B panel (NR columns),
/// both `PackedI8K4` with `blocks` blocks of 4 k (the packing pads k with
/// zeros), to the tile.
///
/// Each block of B is one vector of 8 columns × 4 k. Its absolute value is
/// taken once, and each row's 4 weights, broadcast, take B's signs: four
/// instructions per row and block, where broadcasting B and keeping A as the
/// vector takes five.
///
/// # Safety
/// Both panels must hold `blocks` blocks of [`BLOCK`] bytes.
#[target_feature(enable = "avx2")]
unsafe fn add_mat_mul(tile: &mut [__m256i; MR], pa: *const u8, pb: *const u8, blocks: usize) {
    let ones = _mm256_set1_epi16(1);
    let minus_128 = _mm256_set1_epi8(i8::MIN);
    let mut seen_minus_128 = _mm256_setzero_si256();
    let mut sums = [_mm256_setzero_si256(); MR];
    for block in 0..blocks {
        // SAFETY: the panels hold `blocks` blocks.
        let (columns, weights) =
            unsafe { (_mm256_loadu_si256(pb.add(block * BLOCK) as *const __m256i), pa.add(block * BLOCK)) };
        let magnitudes = _mm256_abs_epi8(columns);
        // SAFETY: as above.
        let block_weights = unsafe { _mm256_loadu_si256(weights as *const __m256i) };
        seen_minus_128 = _mm256_or_si256(seen_minus_128, _mm256_cmpeq_epi8(block_weights, minus_128));
        for (row, sum) in sums.iter_mut().enumerate() {
            // SAFETY: row < MR, so the 4 bytes are inside the block.
            let four = unsafe { (weights.add(4 * row) as *const i32).read_unaligned() };
            let row_weights = _mm256_set1_epi32(four);
            let pairs = _mm256_maddubs_epi16(magnitudes, _mm256_sign_epi8(row_weights, columns));
            *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
        }
    }
    if _mm256_testz_si256(seen_minus_128, seen_minus_128) == 0 {
        // A pair of products with a weight of −128 can leave i16: redo the
        // panel exactly.
        // SAFETY: as above.
        sums = unsafe { products_exact(pa, pb, blocks) };
    }
    for (values, sum) in tile.iter_mut().zip(sums) {
        *values = _mm256_add_epi32(*values, sum);
    }
}

/// Computes the products one at a time, exact for any i8 values: one vector per row.
///
/// # Safety
/// As for [`add_mat_mul`].
#[target_feature(enable = "avx2")]
unsafe fn products_exact(pa: *const u8, pb: *const u8, blocks: usize) -> [__m256i; MR] {
    let mut sums: [Lanes; MR] = std::array::from_fn(|_| Lanes([0; NR]));
    for block in 0..blocks {
        // SAFETY: the panels hold `blocks` blocks of BLOCK bytes.
        let (weights, columns) = unsafe {
            (
                std::slice::from_raw_parts(pa.add(block * BLOCK) as *const i8, BLOCK),
                std::slice::from_raw_parts(pb.add(block * BLOCK) as *const i8, BLOCK),
            )
        };
        for (row, sum) in sums.iter_mut().enumerate() {
            for (column, value) in sum.0.iter_mut().enumerate() {
                let dot: i32 =
                    (0..4).map(|t| i32::from(weights[4 * row + t]) * i32::from(columns[4 * column + t])).sum();
                *value = value.wrapping_add(dot);
            }
        }
    }
    sums.map(|sum| sum.vector())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs an MR × k matrix (rows of A, or columns of B) as `PackedI8K4`.
    fn pack(matrix: &[Vec<i8>]) -> Vec<u8> {
        let k = matrix[0].len();
        let mut packed = vec![0u8; k.div_ceil(4) * BLOCK];
        for (lane, values) in matrix.iter().enumerate() {
            for (index, &value) in values.iter().enumerate() {
                packed[(index / 4) * BLOCK + lane * 4 + index % 4] = value as u8;
            }
        }
        packed
    }

    /// Makes a repeatable spread of i8 values that includes both ends.
    fn values(seed: u32, count: usize, lowest: i8) -> Vec<i8> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..count)
            .map(|index| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                match index % 11 {
                    0 => lowest,
                    1 => 127,
                    _ => (state % 256) as u8 as i8,
                }
                .max(lowest)
            })
            .collect()
    }

    fn run(weights: &[Vec<i8>], columns: &[Vec<i8>], extra: &[FusedKerSpec<i32>]) -> [[i32; NR]; MR] {
        assert!(std::arch::is_x86_feature_detected!("avx2"), "these tests need a CPU with AVX2");
        let k = weights[0].len();
        let (pa, pb) = (pack(weights), pack(columns));
        let mut output = [[0i32; NR]; MR];
        let store = OutputStoreKer {
            ptr: output.as_mut_ptr() as *mut u8,
            row_byte_stride: (NR * 4) as isize,
            col_byte_stride: 4,
            item_size: 4,
        };
        let mut specs =
            vec![FusedKerSpec::Clear, FusedKerSpec::AddMatMul { k, pa: pa.as_ptr(), pb: pb.as_ptr(), packing: 0 }];
        specs.extend_from_slice(extra);
        specs.push(FusedKerSpec::Store(store));
        specs.push(FusedKerSpec::Done);
        assert_eq!(unsafe { kernel(&specs) }, 0);
        output
    }

    fn reference(weights: &[Vec<i8>], columns: &[Vec<i8>]) -> [[i32; NR]; MR] {
        let mut expected = [[0i32; NR]; MR];
        for (row, weights) in weights.iter().enumerate() {
            for (column, values) in columns.iter().enumerate() {
                expected[row][column] = weights.iter().zip(values).map(|(&w, &v)| i32::from(w) * i32::from(v)).sum();
            }
        }
        expected
    }

    #[test]
    fn products_exact_at_range_ends() {
        // k = 27: the first layer of a 3×3 convolution of RGB, not a multiple of 4.
        for k in [1, 4, 27, 288, 1152] {
            let weights: Vec<Vec<i8>> = (0..MR).map(|row| values(row as u32, k, -127)).collect();
            let columns: Vec<Vec<i8>> = (0..NR).map(|column| values(100 + column as u32, k, -128)).collect();
            assert_eq!(run(&weights, &columns, &[]), reference(&weights, &columns), "k = {k}");
        }
        // The largest pairs vpmaddubsw can meet here: 127 or −127 times −128.
        let weights: Vec<Vec<i8>> = (0..MR).map(|row| vec![if row % 2 == 0 { 127 } else { -127 }; 64]).collect();
        let columns: Vec<Vec<i8>> = (0..NR).map(|_| vec![-128; 64]).collect();
        assert_eq!(run(&weights, &columns, &[])[0][0], 64 * 127 * -128);
        assert_eq!(run(&weights, &columns, &[]), reference(&weights, &columns));
    }

    #[test]
    fn minus_128_weights_stay_exact() {
        let weights: Vec<Vec<i8>> = (0..MR).map(|row| values(7 + row as u32, 100, -128)).collect();
        assert!(weights.iter().flatten().any(|&w| w == -128));
        let columns: Vec<Vec<i8>> = (0..NR).map(|_| vec![-128; 100]).collect();
        assert_eq!(run(&weights, &columns, &[]), reference(&weights, &columns));
    }

    #[test]
    fn fused_ops_follow_tract() {
        let weights: Vec<Vec<i8>> = (0..MR).map(|row| vec![row as i8 + 1; 4]).collect();
        let columns: Vec<Vec<i8>> = (0..NR).map(|column| vec![column as i8 - 3; 4]).collect();
        let bias: Vec<i32> = (0..MR as i32).map(|row| 100 * row).collect();
        let per_column: Vec<i32> = (0..NR as i32).map(|column| column - 4).collect();
        let output = run(
            &weights,
            &columns,
            &[
                FusedKerSpec::PerRowAdd(bias.as_ptr()),
                FusedKerSpec::ScalarSub(1000),
                FusedKerSpec::PerColSubF(per_column.as_ptr()),
                FusedKerSpec::ScalarMax(-600),
                FusedKerSpec::ShiftLeft(1),
            ],
        );
        for row in 0..MR {
            for column in 0..NR {
                let product = 4 * (row as i32 + 1) * (column as i32 - 3);
                let expected = ((1000 - (product + bias[row])) - per_column[column]).max(-600) * 2;
                assert_eq!(output[row][column], expected, "row {row}, column {column}");
            }
        }
    }

    #[test]
    fn requantization_rounds_like_tract() {
        let weights: Vec<Vec<i8>> = (0..MR).map(|row| values(row as u32, 40, -127)).collect();
        let columns: Vec<Vec<i8>> = (0..NR).map(|column| values(50 + column as u32, 40, -128)).collect();
        let policy = tract_linalg::mmm::RoundingPolicy::Even;
        let scaler = Scaler::new(0.0005, policy);
        let (multiplier, shift) = (scaler.mult.unwrap_or(0), scaler.shift);
        let output = run(
            &weights,
            &columns,
            &[
                FusedKerSpec::QScale(shift, policy, multiplier),
                FusedKerSpec::ScalarMin(127),
                FusedKerSpec::ScalarMax(-128),
            ],
        );
        let products = reference(&weights, &columns);
        for row in 0..MR {
            for column in 0..NR {
                let expected =
                    products[row][column].q_scale(Scaler::from_fuse_params(shift, policy, multiplier)).clamp(-128, 127);
                assert_eq!(output[row][column], expected);
            }
        }
        // Some values must land inside the range, or the test checks only the clamp.
        let inside = output.iter().flatten().filter(|&&value| value != 0 && value.abs() < 127).count();
        assert!(inside > 0, "{output:?}");
    }

    #[test]
    fn stores_in_every_layout() {
        assert!(std::arch::is_x86_feature_detected!("avx2"), "this test needs a CPU with AVX2");
        let tile: [[i32; NR]; MR] =
            std::array::from_fn(|row| std::array::from_fn(|column| (row * 40 + column) as i32 - 100));
        // The tile goes in through LoadTile, column-major as tract's frame gives it.
        let column_major: Vec<i32> = (0..NR).flat_map(|column| (0..MR).map(move |row| tile[row][column])).collect();
        let rows: Vec<i32> = (0..MR as i32).collect();
        let columns: Vec<i32> = (0..NR as i32).map(|column| 1 - column).collect();
        let added: [[i8; NR]; MR] =
            std::array::from_fn(|row| std::array::from_fn(|column| (row as i8) - (column as i8)));
        let expected =
            |row: usize, column: usize| tile[row][column] + rows[row] * columns[column] + i32::from(added[row][column]);

        for (item_size, row_major) in [(4usize, true), (4, false), (1, true), (1, false)] {
            let mut bytes = vec![0u8; MR * NR * item_size];
            let (row_byte_stride, col_byte_stride) = if row_major {
                ((NR * item_size) as isize, item_size as isize)
            } else {
                (item_size as isize, (MR * item_size) as isize)
            };
            let output = OutputStoreKer { ptr: bytes.as_mut_ptr(), row_byte_stride, col_byte_stride, item_size };
            let unicast = OutputStoreKer {
                ptr: added.as_ptr() as *mut u8,
                row_byte_stride: NR as isize,
                col_byte_stride: 1,
                item_size: 1,
            };
            let specs = [
                FusedKerSpec::LoadTile(column_major.as_ptr(), std::ptr::null()),
                FusedKerSpec::AddRowColProducts(rows.as_ptr(), columns.as_ptr()),
                FusedKerSpec::AddUnicast(unicast),
                FusedKerSpec::Store(output),
                FusedKerSpec::Done,
            ];
            assert_eq!(unsafe { kernel(&specs) }, 0);

            for row in 0..MR {
                for column in 0..NR {
                    let at = (row as isize * row_byte_stride + column as isize * col_byte_stride) as usize;
                    let stored = match item_size {
                        4 => i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()),
                        _ => i32::from(bytes[at] as i8),
                    };
                    let wanted =
                        if item_size == 4 { expected(row, column) } else { i32::from(expected(row, column) as i8) };
                    assert_eq!(
                        stored, wanted,
                        "item size {item_size}, row-major {row_major}, row {row}, column {column}"
                    );
                }
            }
        }
    }

    #[test]
    fn vector_scale_matches_tract() {
        assert!(std::arch::is_x86_feature_detected!("avx2"), "this test needs a CPU with AVX2");
        let policy = RoundingPolicy::Even;
        let mut inputs: Vec<i32> = vec![0, 1, -1, 2, -2, 3, -3, i32::MAX, i32::MIN, i32::MIN + 1, 1 << 20, -(1 << 20)];
        inputs.extend(
            values(3, 4000, -128)
                .chunks(4)
                .map(|b| i32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])),
        );
        inputs.extend((0..2000).map(|i| (i - 1000) * 37));

        // Scales from 0.5 up leave a right shift of 31, which the kernel
        // hands to tract's scalar routine.
        let mut vector_scales = 0;
        for scale in [0.9999, 0.7, 0.0123, 0.0005, 3.0e-6, 1.0e-9] {
            let scaler = Scaler::new(scale, policy);
            let (Some(multiplier), shift) = (scaler.mult, scaler.shift) else {
                panic!("scale {scale} has no multiplier")
            };
            assert!(multiplier > 0);
            let right = shift + 31;
            if !(32..=62).contains(&right) {
                continue;
            }
            vector_scales += 1;
            for chunk in inputs.chunks(MR) {
                let mut lanes = Lanes([0; MR]);
                lanes.0[..chunk.len()].copy_from_slice(chunk);
                let scaled = unsafe { Lanes::of(scale_half_even(lanes.vector(), multiplier, right as i64)) };
                for (input, output) in lanes.0.iter().zip(scaled.0) {
                    let expected = input.q_scale(Scaler::from_fuse_params(shift, policy, multiplier));
                    assert_eq!(output, expected, "{input} scaled by {scale}");
                }
            }
        }
        assert_eq!(vector_scales, 4);

        // Ties go to the even neighbour, away from zero as much as towards it.
        // A quarter: 1 << 30 as Q0.31 with a further shift of 1.
        let lanes = Lanes([2, 6, 10, -2, -6, -10, 14, -14]);
        let scaled = unsafe { Lanes::of(scale_half_even(lanes.vector(), 1 << 30, 32)) };
        assert_eq!(scaled.0, [0, 2, 2, 0, -2, -2, 4, -4]);
        for (input, output) in lanes.0.iter().zip(scaled.0) {
            assert_eq!(output, input.q_scale(Scaler::from_fuse_params(1, policy, 1 << 30)));
        }
    }

    #[test]
    fn dispatch_picks_kernel_on_avx2() {
        let avx2 = IsaSet::ladder(Arch::X86_64, 2);
        assert!(serves(&avx2));
        let dispatch = tract_linalg::mmm::MmmDispatch::for_isa(avx2);
        let chosen = dispatch.preferred_kernel(DatumType::I32, Some(64), Some(576), Some(676)).expect("a kernel");
        assert_eq!(chosen.name(), KERNEL_NAME);
        let f32_kernel = dispatch.preferred_kernel(DatumType::F32, Some(64), Some(576), Some(676)).expect("a kernel");
        assert_ne!(f32_kernel.name(), KERNEL_NAME);
        // Machines with an int8 dot product keep tract's kernels.
        let vnni = IsaSet::ladder(Arch::X86_64, 4);
        assert!(!serves(&vnni));
    }
}
