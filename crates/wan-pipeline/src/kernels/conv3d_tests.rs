//! The packed convolution against a direct six-loop convolution, on geometries that exercise
//! every edge: channels in != out, height != width, history shorter and longer than the padding,
//! time and space strides, pointwise kernels, several pixel blocks, k blocks and partial panels.

use candle_core::{Device, Tensor};

use super::conv3d::{causal_conv3d, ConvGeometry, PackedConv3d};

struct Case {
    b: usize,
    t: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: (usize, usize, usize),
    history: usize,
    g: ConvGeometry,
}

/// `out[b, to, o, yo, xo]` summed term by term from the definition.
fn direct(x: &[f32], hist: &[f32], case: &Case, weight: &[f32], bias: &[f32]) -> (Vec<f32>, [usize; 5]) {
    let Case { b, t, c, h, w, o, k: (kt, kh, kw), history, g } = *case;
    let frame = c * h * w;
    let have = history.min(g.time_pad);
    // The padded input's frame f of batch bi, or None for a zero frame.
    let input = |bi: usize, f: usize| -> Option<&[f32]> {
        if f < g.time_pad - have {
            None
        } else if f < g.time_pad {
            let hf = history - have + (f - (g.time_pad - have));
            Some(&hist[(bi * history + hf) * frame..][..frame])
        } else {
            Some(&x[(bi * t + f - g.time_pad) * frame..][..frame])
        }
    };
    let t_out = (t + g.time_pad - kt) / g.time_stride + 1;
    let h_out = (h + 2 * g.pad - kh) / g.stride + 1;
    let w_out = (w + 2 * g.pad - kw) / g.stride + 1;
    let mut out = Vec::new();
    for bi in 0..b {
        for to in 0..t_out {
            for oc in 0..o {
                for yo in 0..h_out {
                    for xo in 0..w_out {
                        let mut sum = bias[oc] as f64;
                        for ci in 0..c {
                            for dt in 0..kt {
                                let Some(fr) = input(bi, to * g.time_stride + dt) else { continue };
                                for dy in 0..kh {
                                    for dx in 0..kw {
                                        let y = (yo * g.stride + dy) as isize - g.pad as isize;
                                        let xx = (xo * g.stride + dx) as isize - g.pad as isize;
                                        if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                            continue;
                                        }
                                        let wv = weight[(((oc * c + ci) * kt + dt) * kh + dy) * kw + dx];
                                        sum += (wv * fr[(ci * h + y as usize) * w + xx as usize]) as f64;
                                    }
                                }
                            }
                        }
                        out.push(sum as f32);
                    }
                }
            }
        }
    }
    (out, [b, t_out, o, h_out, w_out])
}

fn geometry(time_pad: usize, time_stride: usize, pad: usize, stride: usize) -> ConvGeometry {
    ConvGeometry { time_pad, time_stride, pad, stride }
}

#[test]
fn packed_conv_matches_the_direct_sum() {
    let dev = Device::Cpu;
    let cases = [
        // A resnet conv with no history (first chunk): two zero frames in front.
        Case { b: 1, t: 3, c: 5, h: 6, w: 9, o: 7, k: (3, 3, 3), history: 0, g: geometry(2, 1, 1, 1) },
        // One cached frame: one zero frame, then the history.
        Case { b: 1, t: 2, c: 5, h: 4, w: 3, o: 9, k: (3, 3, 3), history: 1, g: geometry(2, 1, 1, 1) },
        // More history than padding: only its last two frames are read.
        Case { b: 2, t: 1, c: 3, h: 5, w: 4, o: 6, k: (3, 3, 3), history: 3, g: geometry(2, 1, 1, 1) },
        // conv_shortcut: pointwise, channel counts off the panel width.
        Case { b: 2, t: 3, c: 40, h: 3, w: 5, o: 33, k: (1, 1, 1), history: 0, g: geometry(0, 1, 0, 1) },
        // The encoder's time downsampler: kernel (3, 1, 1), stride 2 in time.
        Case { b: 1, t: 5, c: 4, h: 3, w: 2, o: 4, k: (3, 1, 1), history: 0, g: geometry(0, 2, 0, 1) },
        // A spatial downsampler (input already padded right and bottom): stride 2, no padding.
        Case { b: 1, t: 2, c: 6, h: 7, w: 10, o: 5, k: (1, 3, 3), history: 0, g: geometry(0, 1, 0, 2) },
        // Several pixel blocks, several k blocks (k = 1728), three panels, the last partial.
        Case { b: 1, t: 2, c: 64, h: 13, w: 17, o: 70, k: (3, 3, 3), history: 2, g: geometry(2, 1, 1, 1) },
    ];
    for (n, case) in cases.iter().enumerate() {
        let (kt, kh, kw) = case.k;
        let weight = Tensor::randn(0f32, 0.2, (case.o, case.c, kt, kh, kw), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, case.o, &dev).unwrap();
        let Some(packed) = PackedConv3d::pack_for_cpu(&weight, &bias).unwrap() else {
            eprintln!("no AVX2 or AVX-512 on this CPU: the packed conv is not used here");
            return;
        };
        let x = Tensor::randn(0f32, 1.0, (case.b, case.t, case.c, case.h, case.w), &dev).unwrap();
        let hist = (case.history > 0)
            .then(|| Tensor::randn(0f32, 1.0, (case.b, case.history, case.c, case.h, case.w), &dev).unwrap());
        let got = causal_conv3d(&x, hist.as_ref(), &packed, case.g).unwrap().expect("f32 CPU input");
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let hist_values = hist.as_ref().map(flat).unwrap_or_default();
        let (want, dims) = direct(&flat(&x), &hist_values, case, &flat(&weight), &flat(&bias));
        assert_eq!(got.dims(), &dims, "case {n}: shape");
        let got = flat(&got);
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err < 1e-5, "case {n}: relative error {err}");
    }
}

#[test]
fn a_mismatched_input_is_refused_with_both_channel_counts() {
    let dev = Device::Cpu;
    let weight = Tensor::zeros((4, 3, 3, 3, 3), candle_core::DType::F32, &dev).unwrap();
    let bias = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
    let Some(packed) = PackedConv3d::pack_for_cpu(&weight, &bias).unwrap() else { return };
    let x = Tensor::zeros((1, 2, 5, 4, 4), candle_core::DType::F32, &dev).unwrap();
    let err = causal_conv3d(&x, None, &packed, geometry(2, 1, 1, 1)).unwrap_err().to_string();
    assert!(err.contains("5 channels") && err.contains("weight 3"), "{err}");
}
