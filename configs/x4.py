r"""KernelFusion at ×4: blind SR of one LR image (kernel support 33×33).

Usage:
  python main.py --config=configs/x4.py                # GPU, paper-scale default
  python main.py --config=configs/x4.py:cpu            # best quality in ~5 min on a 2-core CPU
  python main.py --config=configs/x4.py:tiny           # smoke test (< 1 min on CPU, 32×32 LR)
  python main.py --config=configs/x4.py --config.phase2.t_start=300   # override a field

Measured runtimes (2026-11-26/28; details in docs/speed.md):
  tiny     2-core CPU, embedded demo (32×32 LR → 128×128):     ~30 s cold, ~13 s when re-run
  cpu      2-core CPU, embedded demo (64×64 LR → 256×256):     2.5–3 min; ~2.3 min per blind144
           crop case; ~45 s per DIV2K-size image (two edge kernels, phases skipped)
  cpu      NVIDIA H100, one 64×64 LR blind144 crop case:       1.8–2.5 s; 57 s for the first
           (compilation)
  default  NVIDIA H200, a DIV2K-size image (LR 510×339) end to end, the edge kernel: 9.0 s
           for the first image in a cold process, 6.6–14.2 s each; with the diffusion
           (--config.kernel_source=inr) 41 s once compiled, 123–136 s for the first image;
           one Phase-2 inner step at HR 2048×1344: 80–82 ms in bf16 (H100)
"""

import ml_collections


def get_config(arg=None):
  """Returns the ×4 config; ``arg`` picks a variant: None (GPU default), 'cpu' or 'tiny'."""
  variant = arg or 'default'
  c = ml_collections.ConfigDict()
  c.variant = variant            # which variant of this file produced the config
  c.seed = 0                     # master PRNG seed: same seed + config + machine → same output
  c.scale = 4                    # SR factor s (the LR is (HR ⊛ k)↓s)
  c.compute_dtype = 'float32'    # dtype of the convolutions: 'float32' or 'bfloat16' (GPU);
                                 #   params, optimiser, loss and downscale stay float32

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.num_steps = 1000   # T, the DDPM timesteps [paper]
  c.diffusion.beta_start = 1e-4  # linear β schedule start [default]
  c.diffusion.beta_end = 0.02    # linear β schedule end [default]

  c.pd = ml_collections.ConfigDict()       # Phase 1: the patch-diffusion model
  c.pd.width = 128               # channels of every hidden conv [paper?]
  c.pd.num_blocks = 5            # (3×3 + 1×1) blocks after the first → 15×15 receptive field [paper]
  c.pd.crop = 64                 # training crop size (clipped to the LR size) [paper]
  c.pd.batch = 16                # crops per step [default]
  c.pd.steps = 10000             # Adam steps [default; the paper reports 600k iterations]
  c.pd.lr = 1e-3                 # Adam learning rate [paper? 1e-4; 1e-3 measured far better for
                                 #   budgets ≤ 10k steps: docs/results.md, tuning log]
  c.pd.grad_clip = 1.0           # global-norm gradient clipping [default]
  c.pd.ema_decay = 0.999         # EMA of the weights, used by Phase 2 [default]
  c.pd.t_max = 400               # train on timesteps t < t_max (≥ phase2.t_start) [default]
  c.pd.augment = True            # random flips and 90° rotations [default]
  c.pd.driver = 'auto'           # 'scan' (one compiled call per chunk), 'loop', or 'auto'
                                 #   (= loop on CPU, scan on GPU/TPU)
  c.pd.chunk = 500               # steps per compiled call / progress line
  c.pd.save_every = 5000         # checkpoint every this many steps (rounded to chunks)

  c.unet = ml_collections.ConfigDict()     # Phase 2: the DIP-style U-Net θ
  c.unet.features = (64, 64, 64, 64)       # channels per level; len = number of ×2 levels [default]
  c.unet.skip = 4                # channels of each skip connection (DIP uses 4) [default]
  c.unet.residual = True         # output x + Δ(x), Δ starts at 0 (U starts as identity) [default]

  c.kernel = ml_collections.ConfigDict()   # Phase 2: the SIREN kernel INR φ
  c.kernel.size = 33             # support K×K; ≥ the largest expected kernel [default]
  c.kernel.width = 256           # units per layer [paper?]
  c.kernel.num_layers = 5        # sine layers [paper?]
  c.kernel.omega0 = 5.0          # SIREN frequency ω0 [paper?]
  c.kernel.prior_sigma = 0.06    # Gaussian logit prior so the first kernel is a small centred blob
                                 #   (in [−1, 1] grid units; 0 = none) [default]
  c.kernel.prior_floor = -3.0    # the prior's logit far from the centre (see KernelINR) [default]

  c.kernel_source = 'inr'        # where the returned kernel comes from: 'inr': Phase 2's kernel
                                 #   INR (the paper; see phase2.kernel_blend); 'edges': a blind
                                 #   deblurring of the LR image itself at the LR grid's scale
                                 #   from predicted edges (kfjax.edge_kernel; classical, ours),
                                 #   both phases skipped, then the final step (phase2.final_bp_reg,
                                 #   final_tv), on LR images of ≥ edges.min_pixels only; 'lrdip':
                                 #   the same from a deep image prior (kfjax.dip_kernel), unless
                                 #   it never narrowed (lrdip.max_spread) [default 'inr' here and
                                 #   in tiny; 'edges' in the default and cpu variants, below;
                                 #   'lrdip' in none: averaged over 3 seeds it gained +0.41 dB on
                                 #   the crop set it was tuned on and lost 0.13 and 0.18 on two
                                 #   others; at full size it tied on a held-out set]
  c.edges = ml_collections.ConfigDict()    # kernel_source 'edges' (kfjax.edge_kernel)
  c.edges.n_iter = 7             # edge-prediction / kernel / deconvolution rounds per pyramid
                                 #   level [default, after Cho & Lee 2009]
  c.edges.r = 0.5                # gradients kept per orientation bin: r·√(N·n²) [default; on
                                 #   blind144 full mini Cho & Lee's 2 scored lower than 1, and 1
                                 #   lower than 0.5 (0.35 the same, 0.25 lower): docs/results.md]
  c.edges.gamma = 1e-2           # Tikhonov weight of the kernel step [default]
  c.edges.alpha = 2e-3           # gradient weight of the image step's deconvolution [default]
  c.edges.soften = 0.0           # σ (LR px) of a Gaussian on the predicted step edges in the
                                 #   kernel step: the LR grid's sharp image has soft edges (its
                                 #   HR block means), which the kernel would otherwise absorb
                                 #   [ours; 0 = off; docs/results.md, "Soft edges"]
  c.edges.threshold = 0.05       # the kernel step's taps below this share of the largest are
                                 #   zeroed [default]
  c.edges.hr_edges = 0           # predict the step edges on a grid this many times finer
                                 #   (the scale s) and average them back over its blocks: the
                                 #   ramps an HR step leaves in the LR grid's sharp image, in
                                 #   place of steps between LR pixels (edge_kernel.predict_edges)
                                 #   [ours; 0 = off: Levin k1/k2 +1.7 dB, but rings and faint
                                 #   tails break; a third edges.ensemble member with
                                 #   hr_levels 1: +0.05 dB on blind144 full mini, −0.05 on
                                 #   div2kfk full: results.md, "Edges predicted at the HR scale"]
  c.edges.hr_levels = 0          # with hr_edges: only on the last this many pyramid levels
                                 #   (0 = all) [ours]
  c.edges.lift_power = 0.0       # the LR-scale kernel onto the HR grid: each tap spread evenly
                                 #   over its s×s block (0), or within the block along the
                                 #   kernel's interpolant to this power, the block sums kept
                                 #   (kernels.lift_lr_kernel) [ours; 0: on blind144 full mini
                                 #   power 2 gains +0.19 dB with the true kernel's block sums
                                 #   and +0.37 with an LR-scale fit to the true HR, but −0.02
                                 #   with the two edge kernels: results.md, "A sharper lift"]
  c.edges.ensemble = ({'soften': 0.5, 'threshold': 0.02},)   # more edge kernels, each these
                                 #   settings with some replaced; the output is the mean of
                                 #   the final steps with the plain kernel and with each, the
                                 #   kernel their mean (pipeline.edges_output) [ours; () = the
                                 #   plain kernel alone. The softened kernel alone moved the
                                 #   sets by −0.10 / +0.22 / −0.10 dB; averaged with the plain
                                 #   one: +0.13 on blind144 full mini (chosen there), +0.08 on
                                 #   73 other blind144 pairs, +0.32 on div2kfk full: results.md,
                                 #   "An ensemble of two edge kernels"]
  c.edges.window = 0             # estimate on the centre window×window LR px at most
                                 #   (0 = the whole image) [default]
  c.edges.min_pixels = 0         # LR images with fewer pixels fall back to the phases [default;
                                 #   the default and cpu variants: 16384, below]
  c.edges.min_agreement = 0.0    # where the Gaussian test fires on an image the edge kernel
                                 #   takes, its switch stands only if the edge kernel's cosine
                                 #   with the spectral Gaussian is at least this (0 = off)
                                 #   [default; the default and cpu variants: 0.6, below]
  c.edges.final_tv = 3e-4        # with the edge kernel, the final step's TV weight and share in
  c.edges.final_tv_mix = 0.75    #   place of phase2.final_tv and final_tv_mix [default: best of
                                 #   λ 1e-4–1e-3 × share 0.5–1 on blind144 full mini, +0.28 dB
                                 #   over 1e-3 × 0.5 with r 0.5's kernels; the two changes
                                 #   together +0.45 there, +0.53 on div2kfk full: results.md]
  c.lrdip = ml_collections.ConfigDict()    # kernel_source 'lrdip' (kfjax.dip_kernel)
  c.lrdip.steps = 1500           # Adam steps, ~35 s for 64×64 LR px on a 2-core CPU [default;
                                 #   800 and 3000 scored lower on blind144 crop mini]
  c.lrdip.lr_image = 2e-3        # Adam learning rate of the image U-Net [default; 1e-3 the same]
  c.lrdip.lr_kernel = 1e-2       # Adam learning rate of the kernel's logits [default; 3e-3 and
                                 #   3e-2 scored 0.8 and 0.5 dB lower on blind144 crop mini]
  c.lrdip.width = 64             # channels per level of the image U-Net [default]
  c.lrdip.levels = 4             # its ×2 levels [default]
  c.lrdip.window = 64            # estimate on the centre window×window LR px at most (0 = all)
                                 #   [default: the size it was tuned on]
  c.lrdip.max_spread = 0.95      # use the estimate only if its major σ is at most this fraction
                                 #   of a uniform K×K kernel's (dip_kernel.spread_ratio; 1 = it
                                 #   never narrowed from its uniform start); else the phases run
                                 #   [default; every estimate above it was far off: results.md]

  c.phase2 = ml_collections.ConfigDict()   # Phase 2: reverse diffusion at HR size
  c.phase2.mode = 'full'         # 'full' | 'pd_unet' | 'unet_only' | 'dip' (paper Table 3), or
                                 #   'unet_pd' (ours: x̂0 is the PD's estimate, no 2nd U-Net)
  c.phase2.renoise = 'fixed'     # 'fixed': x_t = √ᾱ·U(x0_prev) + √(1−ᾱ)·ε; 'posterior': DDPM
                                 #   posterior q(x_t | x_{t_prev}, x̂0) [default: fixed]
  c.phase2.t_start = 100         # T_nd: start the reverse diffusion at t = T_nd − 1 [default;
                                 #   with the final back-projection below, 100 gave the best
                                 #   kernels for it (docs/results.md)]
  c.phase2.stride = 10           # visit every stride-th timestep [default]
  c.phase2.n_iter = 10           # inner Adam steps per timestep [paper? 20; 20 measured worse]
  c.phase2.n_iter_first = 60     # inner Adam steps at the first timestep [paper? 100]
  c.phase2.lr = 5e-4             # Adam learning rate of the U-Net [paper? 1e-4]
  c.phase2.lr_kernel = 5e-4      # Adam learning rate of the kernel INR [paper? 1e-4]
  c.phase2.final_bp_reg = 0.3    # > 0: end with a back-projection onto LR consistency with the
                                 #   final kernel, relative regulariser λ (0 = off: return x̂0,
                                 #   as the paper) [default; 0.3 best of 0.01–1 on blind144
                                 #   crop mini, confirmed on div2kfk: docs/results.md]
  c.phase2.final_bp_from = 'bicubic'   # its start: 'bicubic' (the diffusion then only
                                 #   estimates the kernel; measured best) or 'x0' [default]
  c.phase2.kernel_blend = 0.0    # w > 0: the returned kernel is (1 − w)·the INR's + w·a
                                 #   classical L0 sparse-gradient estimate of the same LR
                                 #   (kfjax.sparse_kernel, ~1 s); the two err in opposite
                                 #   directions (too wide / too small). 0 = the INR's alone, as
                                 #   the paper [default; cpu variant 0.5: docs/results.md]
  c.phase2.final_tv = 0.0        # λ > 0: the output mixes that back-projection with a total-
                                 #   variation SR with the same kernel (weight λ on images in
                                 #   [0, 1]; degradation.sparse_gradient_restore): sharper edges
                                 #   where the LR says nothing. Needs final_bp_reg > 0. 0 = off
                                 #   [default; cpu variant 1e-3: docs/results.md]
  c.phase2.final_tv_mix = 0.5    # the TV image's share of the output when final_tv > 0 [default]
  c.phase2.gaussian_test = 0.0   # τ < 0: a blind test of Gaussian blur. Where the LR spectrum's
                                 #   evidence for its best Gaussian kernel beats no blur by more
                                 #   than −τ (spectral_kernel's evidence_gain < τ), the kernel is
                                 #   that Gaussian and the output its TV SR at gaussian_tv alone.
                                 #   0 = off [tiny; default and cpu variants −2.3 (×2: −3.0):
                                 #   docs/results.md]
  c.phase2.gaussian_tv = 1e-4    # the TV weight λ of that output [default]
  c.phase2.driver = 'auto'       # 'scan', 'loop' or 'auto' (as pd.driver)
  c.phase2.chunk = 3             # timesteps per compiled call / checkpoint (the first timestep
                                 #   and a shorter remainder run one per call)
  c.phase2.trace_every = 1       # keep a kernel snapshot every this many timesteps
  c.phase2.precompile = False    # True: compile Phase 2's programs in a thread while Phase 1
                                 #   trains (scan driver only), to shorten a cold start [default
                                 #   variant True: a cold DIV2K-size image 150.0 → 134.0 s on an
                                 #   H200, same output and step times; docs/speed.md]. Off on CPU

  c.io = ml_collections.ConfigDict()
  c.io.max_hr_pixels = 2048 * 2048   # refuse larger HR outputs (memory guard); see center_crop
  c.io.center_crop = 0           # if > 0, centre-crop the LR input to this size (square) first
  c.io.size_bucket = 0           # > 0: pad the LR (mirrored, bottom/right) to multiples of this
                                 #   many px, so a folder of similar sizes compiles once; the
                                 #   padding is kept out of both phases' losses and the outputs.
                                 #   0 = off (CPU variants: compiling is cheap there, padding not).
                                 #   Small images pay more: a 37×45 LR pads to 64×64 at 32
  c.io.kernel_crop = 0           # > 0: both phases run on the centre kernel_crop × kernel_crop
                                 #   LR px only, which set the kernel; the whole image is then
                                 #   back-projected with it (needs final_bp_reg > 0 and
                                 #   final_bp_from 'bicubic'). A full-size photo on a CPU in
                                 #   minutes: docs/results.md. 0 = the phases see the whole image

  c.demo = ml_collections.ConfigDict()     # the embedded demo (main.py without --input)
  c.demo.hr_size = 512           # HR crop of scikit-image's astronaut (LR = hr_size / scale)

  if variant == 'default':
    c.compute_dtype = 'bfloat16'
    c.phase2.final_tv = 1e-3     # the cpu variant's TV mix: +0.19 dB post hoc on this variant's
                                 #   H100 kernels of 3 full-size blind144 pairs (the L0 kernel
                                 #   mixture lost 0.10 there, so it stays off): docs/results.md
    c.io.size_bucket = 32        # DIV2K's LR sides (510 × 255–384) fall in few buckets [default]
    c.phase2.precompile = True   # a cold first image 16 s sooner (H200, docs/speed.md)
    c.phase2.gaussian_test = -2.3  # as the cpu variant; full size: div2krk +0.73 → +2.01 dB over
                                 #   bicubic, blind144 mini −0.009 (docs/results.md)
    c.kernel_source = 'edges'    # as the cpu variant: the kernel of an LR image of ≥ 128² px
    c.edges.min_pixels = 16384   #   from its edges, the phases skipped; smaller images as before
    c.edges.min_agreement = 0.6  # as the cpu variant
  elif variant == 'cpu':
    # Measured on blind144 crop cases (docs/results.md, tuning log): lr 1e-3 with a short
    # EMA trains a usable PD in 600 steps (t=100 denoising 15.3 → 28.0 dB; lr 1e-4: 16.2 dB).
    c.pd.width = 64
    c.pd.crop = 32
    c.pd.batch = 4
    c.pd.steps = 600
    c.pd.ema_decay = 0.99
    c.pd.chunk = 50
    c.pd.save_every = 200
    c.unet.features = (32, 32, 32, 32)
    c.kernel.width = 128
    c.phase2.kernel_blend = 0.5  # +0.05–0.09 dB on all three benchmarks (chosen on blind144 mini,
                                 #   confirmed on div2kfk and div2krk: docs/results.md)
    c.phase2.final_tv = 1e-3     # +0.05 dB on blind144 mini, +0.21 / +0.09 on div2kfk / div2krk
                                 #   (chosen on mini, confirmed on the others: docs/results.md)
    c.phase2.gaussian_test = -2.3  # div2krk crops +0.92 dB, a held-out Set14 × Gaussian set
                                 #   +0.99; motion sets within 0.01 dB (docs/results.md)
    c.io.kernel_crop = 64        # larger photos: kernel from the centre 64×64 LR px (the size this
                                 #   variant was tuned on), then the whole image back-projected:
                                 #   ~3 min per DIV2K-size image (docs/results.md)
    c.kernel_source = 'edges'    # LR images of ≥ 128² px: the edge kernel of the whole image,
    c.edges.min_pixels = 16384   #   the phases skipped (~45 s per DIV2K-size image). Full size,
                                 #   over the diffusion's kernel, with the edges.* settings
                                 #   above: +1.20 dB on blind144 mini (tuned there), +1.37 on
                                 #   held-out div2kfk; it lost on 64² crops and on Set14's LR
                                 #   images under 12k px, which keep the phases; on its ones of
                                 #   ≥ 16k px and DIV2K crops of LR 128²–256² it won
                                 #   (docs/results.md, "Cleaning the edge kernel, and the size
                                 #   where the variants switch"; 65536 before)
    c.edges.min_agreement = 0.6  # the Gaussian test overruled where the edge kernel disagrees:
                                 #   blind144 full mini +1.53 → +1.76 dB over bicubic (its hollow
                                 #   square, cosine 0.25); no call changed on 28 other fired
                                 #   full-size pairs (cosines ≥ 0.81), 17 of them Gaussian
                                 #   (docs/results.md, "The Gaussian test overruled by the edge
                                 #   kernel")
    c.demo.hr_size = 256
  elif variant == 'tiny':
    c.pd.width = 16
    c.pd.num_blocks = 5
    c.pd.crop = 32
    c.pd.batch = 2
    c.pd.steps = 20
    c.pd.chunk = 10
    c.pd.save_every = 10
    c.pd.t_max = 200
    c.unet.features = (8, 8, 8)
    c.kernel.size = 13
    c.kernel.width = 32
    c.kernel.num_layers = 3
    c.phase2.t_start = 40
    c.phase2.stride = 10
    c.phase2.n_iter = 3
    c.phase2.n_iter_first = 5
    c.phase2.lr = 1e-3
    c.phase2.lr_kernel = 1e-3
    c.phase2.chunk = 2
    c.lrdip.steps = 20
    c.lrdip.width = 8
    c.lrdip.levels = 2
    c.demo.hr_size = 128
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/x4.py (use '', 'cpu' or 'tiny')")
  return c
