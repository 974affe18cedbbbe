#!/usr/bin/env bash
# Regenerates the seed corpora in tests/fuzz/corpus/ (docs/hardening.md): small, valid inputs of
# every kind the fuzz targets read, so that fuzzing starts from files that load.
#   tests/fuzz/make_seeds.sh [path/to/diffuse]      (default: build/bin/diffuse)
# The UNet weights come from the CLI (one training step of fuzz_unet_weights.cpp's config on eight
# Fashion-MNIST images); IDX files, safetensors files of every dtype, PNG and BMP files are written
# by python3's standard library; the JPEG by stb_image_write (libstb-dev), compiled here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cli=${1:-$here/../../build/bin/diffuse}
corpus=$here/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- UNet configs, scheduler configs --------------------------------------------------------
mkdir -p "$corpus/unet_config" "$corpus/scheduler_config"
cp "$here/../../configs/"*.json "$corpus/unet_config/"
# fuzz_unet_weights.cpp's model (and a class-conditional variant of it).
fuzz_model='"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [4, 8],
 "layers_per_block": 1, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
 "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 4, "norm_num_groups": 2'
echo "{\"_class_name\": \"UNet2DModel\", $fuzz_model}" > "$corpus/unet_config/fuzz_model.json"
echo "{$fuzz_model, \"num_class_embeds\": 10}" > "$corpus/unet_config/fuzz_model_classes.json"

# ---- weights: one training step of the fuzz target's model ----------------------------------
"$cli" train --config "$corpus/unet_config/fuzz_model.json" --data fashion-mnist --max-images 8 --batch 2 --steps 1 \
  --out "$work/run" >/dev/null
model=$(find "$work/run" -name diffusion_pytorch_model.safetensors -path '*model*' | sort | head -1)
mkdir -p "$corpus/unet_weights" "$corpus/safetensors"
cp "$model" "$corpus/unet_weights/fuzz_model.safetensors"
cp "$model" "$corpus/safetensors/unet.safetensors"
for f in $(find "$work/run" -name scheduler_config.json | head -1); do
  cp "$f" "$corpus/scheduler_config/trained.json"
done

python3 - "$corpus" <<'PY'
import gzip, json, struct, sys, zlib
corpus = sys.argv[1]

def write(path, data):
    with open(f"{corpus}/{path}", "wb") as f:
        f.write(data)

# Scheduler configs: each class diffusers writes, with its own keys.
for name, cfg in {
    "ddpm": {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001,
             "beta_end": 0.02, "beta_schedule": "linear", "variance_type": "fixed_small",
             "clip_sample": True, "prediction_type": "epsilon"},
    "ddim": {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
             "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "trailing",
             "rescale_betas_zero_snr": True, "prediction_type": "v_prediction"},
    "dpmpp": {"_class_name": "DPMSolverMultistepScheduler", "num_train_timesteps": 1000,
              "beta_schedule": "squaredcos_cap_v2", "solver_order": 2, "algorithm_type": "dpmsolver++",
              "solver_type": "heun", "use_karras_sigmas": True, "final_sigmas_type": "sigma_min"},
}.items():
    write(f"scheduler_config/{name}.json", json.dumps(cfg, indent=1).encode())

# safetensors: one tensor of each dtype, aligned as the reference writer does, with metadata.
tensors = [("f64", "F64", "d", [2]), ("i64", "I64", "q", [2]), ("f32", "F32", "f", [2, 2]),
           ("i32", "I32", "i", [3]), ("f16", "F16", "e", [2]), ("bf16", "BF16", "H", [2]),
           ("i16", "I16", "h", [1]), ("u8", "U8", "B", [3]), ("i8", "I8", "b", [2]), ("bool", "BOOL", "?", [1])]
header, data = {"__metadata__": {"format": "pt"}}, b""
for name, dtype, fmt, shape in tensors:
    n = 1
    for s in shape: n *= s
    values = [True] * n if fmt == "?" else [16256 + i for i in range(n)] if fmt == "H" else [i + 1 for i in range(n)]
    blob = struct.pack("<" + fmt * n, *values)
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
    data += blob
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
write("safetensors/dtypes.safetensors", struct.pack("<Q", len(text)) + text + data)
write("safetensors/empty.safetensors", struct.pack("<Q", 8) + b"{}      ")

# IDX: [images][labels][u16 labels length][flags] (fuzz_idx.cpp); 3 images of 5 x 4.
images = struct.pack(">IIII", 0x803, 3, 5, 4) + bytes(range(60))
labels = struct.pack(">II", 0x801, 3) + bytes([0, 2, 1])
trailer = lambda n, flags: struct.pack("<HB", n, flags)
write("idx/plain_labels", images + labels + trailer(len(labels), 2))
write("idx/gzip_labels_rgb", gzip.compress(images) + gzip.compress(labels) + trailer(len(gzip.compress(labels)), 3))
write("idx/gzip_alone", gzip.compress(images) + trailer(0, 0))

# Images: [file][flags] (fuzz_image_folder.cpp): extension in bits 0-1, class folder bit 2, RGB bit 3.
def png(w, h, channels, rows):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    color = {1: 0, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\0" + bytes(r) for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
write("image_folder/gray.png", png(6, 4, 1, [[(x * 40 + y * 10) % 256 for x in range(6)] for y in range(4)]) + bytes([0]))
write("image_folder/rgba_class.png", png(3, 5, 4, [[(x + y) * 20 % 256 for x in range(12)] for y in range(5)]) + bytes([4 | 8]))
def bmp(w, h):
    row = bytes((x * 30 + c * 70) % 256 for x in range(w) for c in range(3))
    row += b"\0" * (-len(row) % 4)
    pixels = row * h
    return (b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54) +
            struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0) + pixels)
write("image_folder/rgb.bmp", bmp(7, 3) + bytes([3 | 8]))
PY

# JPEG: stb_image_write, the encoder diffuse's own write_image uses.
cat > "$work/jpeg.c" <<'C'
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#include <stdio.h>
int main(int argc, char** argv) {
  unsigned char px[5 * 6 * 3];
  for (int i = 0; i < (int)sizeof px; ++i) px[i] = (unsigned char)(i * 7);
  if (!stbi_write_jpg(argv[1], 5, 6, 3, px, 90)) return 1;
  FILE* f = fopen(argv[1], "ab");  /* the fuzz target's flags byte: .jpg, RGB */
  fputc(1 | 8, f);
  return fclose(f) != 0;
}
C
cc -O1 "$work/jpeg.c" -o "$work/jpeg" -lm
"$work/jpeg" "$corpus/image_folder/rgb.jpg"
echo "make_seeds.sh: $(find "$corpus" -type f | wc -l) seeds, $(du -sh "$corpus" | cut -f1), in $corpus"
