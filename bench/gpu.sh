#!/usr/bin/env bash
# The GPU measurements of the fast-NeRF issue, in one command per part (a lent GPU machine
# is held for minutes at a time, so each part runs everything that belongs together).
#
#   bash bench/gpu.sh speed    OUT   # steps/s, rays/s, samples/s, peak memory: every kind,
#                                    # fp32 / bf16 autocast / bf16 + torch.compile
#   bash bench/gpu.sh embedded OUT   # PSNR at 2..60 s of training on the embedded sample split
#   bash bench/gpu.sh full     OUT [LEGO] [STEPS] [POINTS...]
#                                    # 800x800 Blender lego, 1 view in 8 held out (bf16 + compile)
#   bash bench/gpu.sh speed800 OUT [LEGO]   # fast's step speed at that size, per variant
#   bash bench/gpu.sh profile  OUT   # top kernels of seed and fast steps
#
# LEGO is a Blender folder (default .lego/lego: a copy of ../shared/data/nerf_synthetic/lego
# that travels with the working tree). CSVs, PNG plots and logs go to OUT.
set -uo pipefail
part=${1:?usage: bash bench/gpu.sh speed|embedded|full OUT}
out=${2:?usage: bash bench/gpu.sh speed|embedded|full OUT}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

# The full-size configuration: instant-NGP's table and resolutions, a finer occupancy grid
# and march, larger batches, white background (the Blender convention).
LEGO_800=(split.strategy=every_nth split.every_nth=8 split.image_size=null split.background=white
          model.fast.levels=16 model.fast.log2_table_size=19 model.fast.max_resolution=2048
          model.fast.grid_resolution=128 model.fast.steps_per_diagonal=1024
          model.fast.samples_per_batch=262144 model.fast.max_rays_per_batch=32768 render.chunk=16384)

case $part in
speed)
  for variant in "fp32 false" "bf16 false" "bf16 true"; do
    set -- $variant
    $py -m bench.speed --devices cuda --kinds seed nerf fast --steps 30 --warmup 15 \
      --set train.precision=$1 train.compile=$2 --out "$out/speed_$1_compile-$2.csv" || echo "speed $variant failed"
  done
  ;;
embedded)
  # A schedule sized for each budget: 10 s and 60 s of training.
  $py -m bench.quality --devices cuda --kinds fast --steps 1500 --points 2 5 10 \
    --out "$out/quality_gpu_10s" || echo "embedded 10 s failed"
  $py -m bench.quality --devices cuda --kinds fast --steps 8000 --points 10 30 60 \
    --out "$out/quality_gpu_60s" || echo "embedded 60 s failed"
  ;;
full)
  lego=${3:-.lego/lego}
  steps=${4:-20000}
  shift $(( $# < 4 ? $# : 4 ))
  points=("${@:-30 60 120 300}")
  $py -m bench.quality --devices cuda --kinds fast --steps "$steps" --points ${points[@]} \
    --set data.source="$lego" "${LEGO_800[@]}" train.precision=bf16 train.compile=true \
    --out "$out/quality_lego800" || echo "full failed"
  ;;
speed800)
  lego=${3:-.lego/lego}
  for variant in "fp32 false" "bf16 false" "bf16 true"; do
    set -- $variant
    $py -m bench.speed --devices cuda --kinds fast --steps 30 --warmup 15 \
      --set data.source="$lego" "${LEGO_800[@]}" train.precision=$1 train.compile=$2 \
      --out "$out/speed800_$1_compile-$2.csv" || echo "speed800 $variant failed"
  done
  ;;
profile)
  $py -m bench.profile --device cuda --kinds seed fast --out "$out" || echo "profile failed"
  ;;
*)
  echo "unknown part $part; expected speed, embedded or full" >&2
  exit 2
  ;;
esac
