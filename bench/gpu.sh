#!/usr/bin/env bash
# The GPU measurements of the fast-NeRF issue, in one command per part (a lent GPU machine
# is held for minutes at a time, so each part runs everything that belongs together).
#
#   bash bench/gpu.sh all      OUT [LEGO]   # the issue's targets in one call of ~8 min,
#                                           # most needed first (see below)
#   bash bench/gpu.sh speed    OUT   # steps/s, rays/s, samples/s, peak memory: every kind,
#                                    # fp32 / tf32 / bf16 autocast / bf16 + torch.compile
#   bash bench/gpu.sh embedded OUT   # PSNR at 2..60 s of training on the embedded sample split
#   bash bench/gpu.sh full     OUT [LEGO] [STEPS] [POINTS...]
#                                    # 800x800 Blender lego, 1 view in 8 held out
#                                    # (PRECISION=auto COMPILE=false KERNEL=auto unless set;
#                                    # KERNEL sets the hash, march and render kernels)
#   bash bench/gpu.sh profile  OUT   # top kernels of seed and fast steps
#   bash bench/gpu.sh seed     OUT   # seed's MLP kernels (model.seed.mlp_kernel): their CUDA
#                                    # tests, the network's time per tiling (bench.mlp_tiles),
#                                    # steps/s with the kernels, with the PyTorch code, and with it
#                                    # compiled; profiles
#   bash bench/gpu.sh tune     OUT [LEGO]   # full size, after the occupancy grid has pruned:
#                                    # step speed with each Triton kernel swapped for the
#                                    # PyTorch code, per arithmetic and compiled; a profile;
#                                    # PSNR at 30/60 s of the 5-min schedule per variant in
#                                    # TUNE_VARIANTS (default: 2^20 and 2^18 samples per batch)
#
# LEGO is a Blender folder (default .lego/lego: a copy of ../shared/data/nerf_synthetic/lego
# that travels with the working tree). CSVs, PNG plots and logs go to OUT (for `all`, into
# OUT/all.tar: tar -xf all.tar).
# The GPU machine's image lacks ruamel.yaml (nerf.config reads params.yaml with it): run
# `make gpu-wheels` on the development machine and carry .gpu_wheels (and .lego) with the
# device tool; every part installs what is in .gpu_wheels first, then checks the imports.
# Environment: DEVICE (default cuda; cpu dry-runs the commands), FULL_SECONDS (all: the
# full-size training budget, default 300), EXTRA_SET (more KEY=VALUE overrides for every
# full-size run, e.g. split.image_size=100 for a quick dry run).
set -uo pipefail
usage="usage: bash bench/gpu.sh all|speed|embedded|full|profile|seed|tune OUT"
part=${1:?$usage}
out=${2:?$usage}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
read -r -a extra <<< "${EXTRA_SET:-}"

# The full-size configuration: instant-NGP's levels and resolutions with a 2^20 table (2^19
# and a 4096 finest level measured worse at 60 s), a finer occupancy grid and march, 2^19-sample
# batches (35.20 and 35.12 dB at 300 s against 34.90 for 2^18, README), white background (the
# Blender convention).
LEGO_800=(split.strategy=every_nth split.every_nth=8 split.image_size=null split.background=white
          model.fast.levels=16 model.fast.log2_table_size=20 model.fast.max_resolution=2048
          model.fast.grid_resolution=128 model.fast.steps_per_diagonal=1024
          model.fast.samples_per_batch=524288 model.fast.max_rays_per_batch=65536 render.chunk=16384
          ${extra[@]+"${extra[@]}"})

# The PyTorch code in place of all three Triton kernels (the defaults run them on CUDA).
TORCH_KERNELS=(model.fast.hash_kernel=torch model.fast.march_kernel=torch model.fast.render_kernel=torch)

# Missing packages first, from .gpu_wheels (no index: the GPU machine reaches none); then a
# check that the project imports, which fails in seconds rather than in every step.
if [ -d .gpu_wheels ] && ls .gpu_wheels/*.whl > /dev/null 2>&1; then
  $py -m pip install -q --no-index --no-deps .gpu_wheels/*.whl > "$out/pip.txt" 2>&1 \
    || echo "pip install from .gpu_wheels failed: see $out/pip.txt"
fi
if ! problem=$($py -c "import bench.common, bench.quality, bench.speed, nerf.training" 2>&1); then
  echo "cannot import the project with $py: ${problem##*$'\n'}" >&2
  echo "(on the development machine: make gpu-wheels, then carry .gpu_wheels)" >&2
  exit 2
fi
# A Blender folder is needed by the parts that train at full size.
need_lego() {
  if [ ! -f "$1/transforms_train.json" ]; then
    echo "no Blender folder at $1 (transforms_train.json): mkdir -p .lego && cp -r" \
      "../shared/data/nerf_synthetic/lego .lego/, then carry .lego" >&2
    exit 2
  fi
}

case $part in
speed)
  for variant in "fp32 false" "tf32 false" "bf16 false" "bf16 true"; do
    set -- $variant
    $py -m bench.speed --devices $device --kinds seed nerf fast --steps 30 --warmup 15 \
      --set train.precision=$1 train.compile=$2 --out "$out/speed_$1_compile-$2.csv" || echo "speed $variant failed"
  done
  $py -m bench.speed --devices $device --kinds fast --steps 30 --warmup 15 --set "${TORCH_KERNELS[@]}" \
    --out "$out/speed_fast_torch_kernels.csv" || echo "speed torch kernels failed"
  ;;
embedded)
  # A schedule sized for each budget: 10 s and 60 s of training.
  $py -m bench.quality --devices $device --kinds fast --steps 1500 --points 2 5 10 \
    --out "$out/quality_embedded_10s" || echo "embedded 10 s failed"
  $py -m bench.quality --devices $device --kinds fast --steps 8000 --points 10 30 60 \
    --out "$out/quality_embedded_60s" || echo "embedded 60 s failed"
  ;;
full)
  lego=${3:-.lego/lego}
  need_lego "$lego"
  steps=${4:-20000}
  shift $(( $# < 4 ? $# : 4 ))
  points=("${@:-30 60 120 300}")
  $py -m bench.quality --devices $device --kinds fast --steps "$steps" --points ${points[@]} \
    --set data.source="$lego" "${LEGO_800[@]}" train.precision=${PRECISION:-auto} train.compile=${COMPILE:-false} \
    model.fast.hash_kernel=${KERNEL:-auto} model.fast.march_kernel=${KERNEL:-auto} \
    model.fast.render_kernel=${KERNEL:-auto} \
    --out "$out/quality_lego800" || echo "full failed"
  ;;
profile)
  $py -m bench.profile --device $device --kinds seed fast --out "$out" || echo "profile failed"
  ;;
seed)
  # The seed target (>= 100 steps/s at the seed's configuration) with the fused MLP kernels.
  # Results appended to OUT/seed.tar as each part ends. MLP_TILINGS: ROWS/N/K/WARPS/STAGES
  # tilings to time (the first is nerf.mlp_kernel's default).
  res=$(mktemp -d)
  rm -f "$out/seed.tar"  # a fresh archive: appending to an earlier run's would mix them
  keep() { (cd "$res" && tar -rf "$out/seed.tar" "$@" 2>/dev/null); }
  started=$SECONDS
  NERF_TEST_DEVICE=$device timeout 240 $py -m pytest -q -p no:cacheprovider tests/test_mlp_kernel.py \
    tests/test_devices.py -k "seed or mlp" > "$res/test_seed.txt" 2>&1; echo "tests: exit $?" | tee -a "$res/test_seed.txt"
  keep test_seed.txt
  echo "[$((SECONDS - started)) s] tests done"
  # A CPU dry run: the interpreter on a few samples, one or two seed steps (~1 min each there).
  if [ "$device" = cpu ]; then
    tiles=(--samples 1000 --repeats 1 --warmup 0); timed=(--steps 1 --warmup 1); profiled=(--steps 1 --warmup 1)
  else
    tiles=(); timed=(--steps 30 --warmup 15); profiled=()
  fi
  $py -m bench.mlp_tiles --tilings ${MLP_TILINGS:-128/128/64/8/2 128/128/64/8/3 128/128/32/8/4 64/128/64/4/2 128/256/64/8/2} \
    ${tiles[@]+"${tiles[@]}"} --out "$res/mlp_tiles.csv" || echo "mlp_tiles failed"
  keep mlp_tiles.csv
  echo "[$((SECONDS - started)) s] tilings done"
  for kernel in triton torch; do
    $py -m bench.speed --devices $device --kinds seed "${timed[@]}" --set model.seed.mlp_kernel=$kernel \
      --out "$res/speed_seed_$kernel.csv" || echo "speed $kernel failed"
    keep "speed_seed_$kernel.csv"
    $py -m bench.profile --device $device --kinds seed ${profiled[@]+"${profiled[@]}"} \
      --set model.seed.mlp_kernel=$kernel --out "$res/$kernel" \
      || echo "profile $kernel failed"
    mv "$res/$kernel/profile_seed_$device.txt" "$res/profile_seed_${kernel}_$device.txt" 2>/dev/null
    keep "profile_seed_${kernel}_$device.txt"
    echo "[$((SECONDS - started)) s] $kernel done"
  done
  # torch.compile of the PyTorch code (fuses the elementwise work around the matmuls): 52.4
  # steps/s against 42.0 eager on session 3's code; today's, for comparison with the kernels.
  $py -m bench.speed --devices $device --kinds seed "${timed[@]}" --set model.seed.mlp_kernel=torch \
    train.compile=true --out "$res/speed_seed_torch_compiled.csv" || echo "speed compiled failed"
  keep speed_seed_torch_compiled.csv
  echo "[$((SECONDS - started)) s] compiled done"
  ;;
all)
  # 1. The CUDA tests (tests/test_devices.py, and the Triton kernels' tests, compiled on the
  #    GPU; seed's MLP kernels are the seed part's, and the sm_90 compile checks, meant for
  #    machines without a GPU, are left out: together ~1.5 min of the 10 a command may take).
  # 2. fast's full-size step speed with the defaults (train.precision auto = TF32 matmuls,
  #    the hash, march and render kernels auto = Triton) after 300 warm-up steps.
  # 3. PSNR within 2, 5 and 10 s on the embedded sample with the defaults.
  # 4. The full-size run with a time budget of FULL_SECONDS (train.time_budget: the learning
  #    rate decays over that time), PSNR at 1/5, 2/5, 3/5 and all of it.
  # 5. In the time left: every kind's speed with the defaults, fast with the PyTorch code
  #    in place of the three Triton kernels.
  # The device tool brings back at most 8 files from OUT, so each step's files are appended
  # to OUT/all.tar as soon as the step ends (what a timeout cuts off loses only its step).
  lego=${3:-.lego/lego}
  need_lego "$lego"
  res=$(mktemp -d)
  rm -f "$out/all.tar"  # a fresh archive: appending to an earlier run's would mix them
  keep() { (cd "$res" && tar -rf "$out/all.tar" "$@" 2>/dev/null); }
  seconds=${FULL_SECONDS:-300}
  started=$SECONDS
  NERF_TEST_DEVICE=$device timeout 180 $py -m pytest -q -p no:cacheprovider tests/test_devices.py \
    tests/test_hash_kernel.py tests/test_march_kernel.py tests/test_render_kernel.py tests/test_kernels.py \
    -k "not h100 and not seed_mlp" > "$res/test_devices.txt" 2>&1
  echo "test_devices: exit $?" | tee -a "$res/test_devices.txt"
  keep test_devices.txt
  echo "[$((SECONDS - started)) s] tests done"
  $py -m bench.speed --devices $device --kinds fast --steps 64 --warmup ${ALL_WARMUP:-300} \
    --set data.source="$lego" "${LEGO_800[@]}" --out "$res/speed800_defaults.csv" || echo "speed800 failed"
  keep speed800_defaults.csv
  echo "[$((SECONDS - started)) s] full-size speed done"
  $py -m bench.quality --devices $device --kinds fast --steps 1500 --points 2 5 10 \
    --out "$res/quality_embedded_10s" || echo "embedded 10 s failed"
  keep quality_embedded_10s.csv quality_embedded_10s.png
  echo "[$((SECONDS - started)) s] embedded done"
  # Straight into OUT, not the archive: the CSV is rewritten at each point, so a command cut
  # off at its time limit still brings back the points scored by then.
  $py -m bench.quality --devices $device --kinds fast --steps 10000000 \
    --points $((seconds / 5)) $((seconds * 2 / 5)) $((seconds * 3 / 5)) $seconds \
    --set data.source="$lego" "${LEGO_800[@]}" train.time_budget=$seconds --out "$out/quality_lego800" \
    || echo "full failed"
  echo "[$((SECONDS - started)) s] full size done"
  $py -m bench.speed --devices $device --kinds fast nerf seed --steps 30 --warmup 15 \
    --out "$res/speed_defaults.csv" || echo "speed failed"
  keep speed_defaults.csv
  $py -m bench.speed --devices $device --kinds fast --steps 30 --warmup 15 --set "${TORCH_KERNELS[@]}" \
    --out "$res/speed_fast_torch_kernels.csv" || echo "speed failed"
  keep speed_fast_torch_kernels.csv
  echo "[$((SECONDS - started)) s] all done"
  ;;
tune)
  # What limits fast at full size once the occupancy grid has pruned (TUNE_WARMUP steps,
  # default 300): step speed with the defaults, with each Triton kernel and all three in
  # turn replaced by the PyTorch code, per arithmetic (train.precision fp32, bf16) and
  # compiled; a profile with the defaults; then PSNR at 30 and 60 s of a 5-minute time budget
  # (train.time_budget=300: the learning rate decays over the 5 minutes whatever the step rate)
  # for each variant in TUNE_VARIANTS (variants separated by ';', each one or more
  # KEY=VALUE). Results appended to OUT/tune.tar.
  lego=${3:-.lego/lego}
  need_lego "$lego"
  res=$(mktemp -d)
  rm -f "$out/tune.tar"  # a fresh archive: appending to an earlier run's would mix them
  keep() { (cd "$res" && tar -rf "$out/tune.tar" "$@" 2>/dev/null); }
  started=$SECONDS
  for v in "defaults|" "hash-torch|model.fast.hash_kernel=torch" "march-torch|model.fast.march_kernel=torch" \
           "render-torch|model.fast.render_kernel=torch" "all-torch|${TORCH_KERNELS[*]}" "fp32|train.precision=fp32" \
           "bf16|train.precision=bf16" "compiled|train.compile=true"; do
    name="speed800_${v%%|*}"
    read -r -a sets <<< "${v#*|}"
    $py -m bench.speed --devices $device --kinds fast --steps ${TUNE_TIMED:-64} --warmup ${TUNE_WARMUP:-300} \
      --set data.source="$lego" "${LEGO_800[@]}" ${sets[@]+"${sets[@]}"} --out "$res/$name.csv" || echo "$name failed"
    keep "$name.csv"
    echo "[$((SECONDS - started)) s] $name"
  done
  $py -m bench.profile --device $device --kinds fast --warmup ${TUNE_WARMUP:-300} --steps 20 --rows 30 \
    --set data.source="$lego" "${LEGO_800[@]}" --out "$res" || echo "profile failed"
  keep "profile_fast_$device.txt"
  echo "[$((SECONDS - started)) s] profile done"
  IFS=';' read -r -a variants <<< "${TUNE_VARIANTS:-model.fast.samples_per_batch=1048576 model.fast.max_rays_per_batch=131072;model.fast.samples_per_batch=262144 model.fast.max_rays_per_batch=32768}"
  for v in "${variants[@]}"; do
    read -r -a sets <<< "$v"
    name="quality_lego800_$(echo "$v" | tr -c 'A-Za-z0-9_\n' '_')"
    $py -m bench.quality --devices $device --kinds fast --steps 10000000 --points 30 60 \
      --set data.source="$lego" "${LEGO_800[@]}" train.time_budget=300 "${sets[@]}" --out "$res/$name" \
      || echo "quality $v failed"
    keep "$name.csv"
    echo "[$((SECONDS - started)) s] quality $v"
  done
  ;;
*)
  echo "unknown part $part; $usage" >&2
  exit 2
  ;;
esac
