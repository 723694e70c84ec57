//! A literal port of darknet's image loading and resizing (`src/image.c` of
//! AlexeyAB/darknet): the same loops, `int` and `float` types and order of
//! operations as the C code, with no attempt at speed. Tests and the resize
//! benchmark compare `edgedet::preprocess::prepare_input` against it.
//!
//! Darknet's `resize_image` divides by zero for an output height of 1, and
//! its result is undefined there, so this port must not be used as the
//! expected value for that case.

// Each user needs only part of the port, and the C shape of declarations is kept.
#![allow(dead_code, clippy::needless_late_init)]

use image::RgbImage;

/// Darknet's `image`: planar float data, `data[c*h*w + y*w + x]`.
pub struct Image {
    pub w: i32,
    pub h: i32,
    pub c: i32,
    pub data: Vec<f32>,
}

pub fn make_image(w: i32, h: i32, c: i32) -> Image {
    Image { w, h, c, data: vec![0.0; (w.max(0) * h.max(0) * c) as usize] }
}

/// `load_image_stb` after stb_image has returned interleaved 8-bit RGB.
pub fn load_image_from_rgb8(rgb: &RgbImage) -> Image {
    let w = rgb.width() as i32;
    let h = rgb.height() as i32;
    let c = 3;
    let data = rgb.as_raw();
    let mut im = make_image(w, h, c);
    for k in 0..c {
        for j in 0..h {
            for i in 0..w {
                let dst_index = i + w * j + w * h * k;
                let src_index = k + c * i + c * w * j;
                im.data[dst_index as usize] = (f64::from(data[src_index as usize]) / 255.0) as f32;
            }
        }
    }
    im
}

fn get_pixel(m: &Image, x: i32, y: i32, c: i32) -> f32 {
    assert!(x < m.w && y < m.h && c < m.c);
    m.data[(c * m.h * m.w + y * m.w + x) as usize]
}

fn set_pixel(m: &mut Image, x: i32, y: i32, c: i32, val: f32) {
    if x < 0 || y < 0 || c < 0 || x >= m.w || y >= m.h || c >= m.c {
        return;
    }
    m.data[(c * m.h * m.w + y * m.w + x) as usize] = val;
}

fn add_pixel(m: &mut Image, x: i32, y: i32, c: i32, val: f32) {
    assert!(x < m.w && y < m.h && c < m.c);
    m.data[(c * m.h * m.w + y * m.w + x) as usize] += val;
}

fn copy_image(p: &Image) -> Image {
    Image { w: p.w, h: p.h, c: p.c, data: p.data.clone() }
}

pub fn resize_image(im: &Image, w: i32, h: i32) -> Image {
    if im.w == w && im.h == h {
        return copy_image(im);
    }

    let mut resized = make_image(w, h, im.c);
    let mut part = make_image(w, im.h, im.c);
    let w_scale = (im.w - 1) as f32 / (w - 1) as f32;
    let h_scale = (im.h - 1) as f32 / (h - 1) as f32;
    for k in 0..im.c {
        for r in 0..im.h {
            for c in 0..w {
                let val;
                if c == w - 1 || im.w == 1 {
                    val = get_pixel(im, im.w - 1, r, k);
                } else {
                    let sx = c as f32 * w_scale;
                    let ix = sx as i32;
                    let dx = sx - ix as f32;
                    val = (1.0 - dx) * get_pixel(im, ix, r, k) + dx * get_pixel(im, ix + 1, r, k);
                }
                set_pixel(&mut part, c, r, k, val);
            }
        }
    }
    for k in 0..im.c {
        for r in 0..h {
            let sy = r as f32 * h_scale;
            let iy = sy as i32;
            let dy = sy - iy as f32;
            for c in 0..w {
                let val = (1.0 - dy) * get_pixel(&part, c, iy, k);
                set_pixel(&mut resized, c, r, k, val);
            }
            if r == h - 1 || im.h == 1 {
                continue;
            }
            for c in 0..w {
                let val = dy * get_pixel(&part, c, iy + 1, k);
                add_pixel(&mut resized, c, r, k, val);
            }
        }
    }
    resized
}

fn fill_image(m: &mut Image, s: f32) {
    for value in &mut m.data {
        *value = s;
    }
}

fn embed_image(source: &Image, dest: &mut Image, dx: i32, dy: i32) {
    for k in 0..source.c {
        for y in 0..source.h {
            for x in 0..source.w {
                let val = get_pixel(source, x, y, k);
                set_pixel(dest, dx + x, dy + y, k, val);
            }
        }
    }
}

/// Returns the letterboxed image and its `(new_w, new_h)`.
pub fn letterbox_image(im: &Image, w: i32, h: i32) -> (Image, i32, i32) {
    let new_w;
    let new_h;
    if (w as f32 / im.w as f32) < (h as f32 / im.h as f32) {
        new_w = w;
        new_h = (im.h * w) / im.w;
    } else {
        new_h = h;
        new_w = (im.w * h) / im.h;
    }
    let resized = resize_image(im, new_w, new_h);
    let mut boxed = make_image(w, h, im.c);
    fill_image(&mut boxed, 0.5);
    embed_image(&resized, &mut boxed, (w - new_w) / 2, (h - new_h) / 2);
    (boxed, new_w, new_h)
}
