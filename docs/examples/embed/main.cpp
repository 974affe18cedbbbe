// embed: generates images from a diffusers-layout model directory with diffuse's public API and
// writes them to one PNG. Usage: embed MODEL_DIR OUT.png [COUNT] [SEED] [CLASS] [GUIDANCE]
#include <diffuse/diffuse.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR OUT.png [COUNT] [SEED] [CLASS] [GUIDANCE]\n", argv[0]);
    return 2;
  }
  try {
    diffuse::Model model = diffuse::Model::load(argv[1]);  // diffuse::Device::cuda for a GPU

    // DDIM with 20 steps: quicker than the defaults (diffuse sample's: DDPM, 100 steps); the noise
    // schedule comes from the model's scheduler config.
    diffuse::SamplerOptions sampler;
    sampler.sampler = "ddim";
    sampler.steps = 20;
    diffuse::Pipeline pipeline(model, sampler);

    const int count = argc > 3 ? std::stoi(argv[3]) : 4;
    diffuse::GenerateRequest request;
    request.count = count;
    request.seed = argc > 4 ? std::stoull(argv[4]) : 0;
    request.class_label = argc > 5 ? std::stoi(argv[5]) : -1;
    request.guidance = argc > 6 ? std::stod(argv[6]) : 1.0;

    // The caller owns the memory: count images, NHWC floats in [-1, 1].
    std::vector<float> images(count * pipeline.image_elements());
    pipeline.generate(request, images.data(), images.size());

    const int size = model.sample_size();
    diffuse::write_png(argv[2], images.data(), count, size, size, model.channels());
    std::printf("wrote %d images of %dx%dx%d (%s, %d steps) to %s\n", count, size, size,
                model.channels(), pipeline.sampler().c_str(), pipeline.steps(), argv[2]);
    return 0;
  } catch (const diffuse::Error& e) {
    std::fprintf(stderr, "embed: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // std::stoi on a bad argument
    std::fprintf(stderr, "embed: bad argument (%s)\n", e.what());
    return 2;
  }
}
