// Image output: the [-1, 1] → 8-bit mapping, make_grid's layout (torchvision's), PNG/BMP/JPEG
// round trips through the reader, and failed writes that leave the destination as it was.
#include <catch2/catch.hpp>
#include <cmath>

#include "engine/image_io.h"
#include "support/temp_dir.h"

using namespace diffuse;
using Catch::Contains;
using test::slurp;
using test::TempDir;
using test::write_bytes;

namespace {

// Images [N, H, W, C] whose values encode (image, y, x, channel), all inside [-1, 1].
Tensor pattern(int64_t n, int64_t h, int64_t w, int64_t c) {
  std::vector<double> v;
  for (int64_t k = 0; k < n; ++k)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t ch = 0; ch < c; ++ch) v.push_back(-1.0 + 2.0 * ((k * 37 + y * 11 + x * 5 + ch * 3) % 256) / 255.0);
  return Tensor::from(v, {n, h, w, c});
}

uint8_t expected_byte(double v) { return static_cast<uint8_t>(std::floor(std::clamp((v + 1) * 127.5 + 0.5, 0.0, 255.0))); }

}  // namespace

TEST_CASE("[-1, 1] maps to bytes like torchvision's save_image, NaN to 0", "[image_io]") {
  Tensor t = Tensor::from({-1, 1, 0, -2, 3, std::nan(""), -0.5, 0.999}, {2, 4, 1});
  Image8 im = to_image8(t);
  CHECK(im.width == 4);
  CHECK(im.height == 2);
  CHECK(im.channels == 1);
  CHECK(im.pixels == std::vector<uint8_t>{0, 255, 128, 0, 255, 0, 64, 255});
  CHECK(to_image8(t.view({1, 2, 4, 1})).pixels == im.pixels);
  CHECK_THROWS_WITH(to_image8(Tensor::zeros({2, 2, 2})), Contains("1, 3 or 4 channels"));
  CHECK_THROWS_WITH(to_image8(Tensor::zeros({2, 2})), Contains("expected an image [H, W, C]"));
}

TEST_CASE("make_grid lays images out like torchvision with 2-pixel padding", "[image_io]") {
  const int64_t n = 5, h = 3, w = 4, c = 3;
  Tensor imgs = pattern(n, h, w, c);
  auto values = imgs.to_vector();
  for (int64_t nrow : {0, 2, 5, 9}) {
    Image8 g = make_grid(imgs, nrow);
    int64_t cols = nrow == 0 ? 3 : std::min(nrow, n), rows = (n + cols - 1) / cols;
    REQUIRE(g.width == cols * (w + 2) + 2);
    REQUIRE(g.height == rows * (h + 2) + 2);
    int64_t image_pixels = 0, zero_pixels = 0;
    for (int64_t y = 0; y < g.height; ++y)
      for (int64_t x = 0; x < g.width; ++x) {
        int64_t gy = y - 2, gx = x - 2;
        int64_t k = (gy / (h + 2)) * cols + gx / (w + 2);
        bool inside = gy >= 0 && gx >= 0 && gy % (h + 2) < h && gx % (w + 2) < w && k < n;
        for (int64_t ch = 0; ch < c; ++ch) {
          uint8_t got = g.pixels[static_cast<size_t>((y * g.width + x) * c + ch)];
          if (inside) {
            int64_t iy = gy % (h + 2), ix = gx % (w + 2);
            CHECK(got == expected_byte(values[static_cast<size_t>(((k * h + iy) * w + ix) * c + ch)]));
            ++image_pixels;
          } else {
            CHECK(got == 0);
            ++zero_pixels;
          }
        }
      }
    CHECK(image_pixels == n * h * w * c);
  }
  CHECK_THROWS_WITH(make_grid(Tensor::zeros({0, 2, 2, 1})), Contains("N >= 1"));
  CHECK_THROWS_WITH(make_grid(imgs, 2, -1), Contains("padding"));
}

TEST_CASE("PNG files round-trip exactly for gray, RGB and RGBA", "[image_io]") {
  TempDir dir;
  for (int64_t c : {1, 3, 4}) {
    Tensor img = pattern(1, 5, 7, c);
    std::string p = dir.file("img" + std::to_string(c) + ".png");
    save_png(p, img);
    Image8 back = read_image(p);
    CHECK(back.width == 7);
    CHECK(back.height == 5);
    CHECK(back.channels == c);
    CHECK(back.pixels == to_image8(img).pixels);
  }
  Tensor grid = pattern(6, 4, 4, 3);
  save_png_grid(dir.file("grid.png"), grid, 3);
  Image8 g = read_image(dir.file("grid.png"));
  CHECK(g.pixels == make_grid(grid, 3).pixels);
  CHECK(g.width == 3 * 6 + 2);
  CHECK(g.height == 2 * 6 + 2);
  CHECK(read_image(dir.file("img3.png"), 1).channels == 1);  // converted on read
  CHECK(dir.entries() == std::vector<std::string>{"grid.png", "img1.png", "img3.png", "img4.png"});
}

TEST_CASE("BMP round-trips exactly, JPEG approximately", "[image_io]") {
  TempDir dir;
  Image8 im = to_image8(pattern(1, 8, 8, 3));
  write_image(dir.file("a.bmp"), im);
  CHECK(read_image(dir.file("a.bmp")).pixels == im.pixels);
  Image8 flat{8, 8, 3, std::vector<uint8_t>(8 * 8 * 3, 90)};
  write_image(dir.file("a.jpg"), flat);
  Image8 j = read_image(dir.file("a.jpg"));
  REQUIRE(j.pixels.size() == flat.pixels.size());
  for (uint8_t p : j.pixels) CHECK(std::abs(int(p) - 90) <= 2);
  CHECK_THROWS_WITH(write_image(dir.file("a.gif"), im), Contains("a.gif") && Contains("unknown extension"));
  CHECK_THROWS_WITH(write_image(dir.file("b.png"), Image8{2, 2, 3, {1, 2, 3}}), Contains("b.png") && Contains("3 bytes"));
}

TEST_CASE("a failed image write leaves the existing file and no temporary", "[image_io][atomic]") {
  TempDir dir;
  std::string p = dir.file("samples.png");
  save_png_grid(p, pattern(4, 4, 4, 1));
  const std::string before = slurp(p);
  CHECK_THROWS_WITH(save_png_grid(p, Tensor::zeros({4, 4, 4, 2})), Contains("channels"));
  CHECK_THROWS_WITH(save_png(p, Tensor::zeros({4, 4})), Contains("[H, W, C]"));
  CHECK_THROWS_WITH(save_png(dir.file("x.jpg"), pattern(1, 2, 2, 1)), Contains("x.jpg") && Contains(".png"));
  CHECK(slurp(p) == before);
  // Renaming over a directory fails after the encoder ran: the temporary must go away.
  std::filesystem::create_directory(dir.file("taken.png"));
  CHECK_THROWS_WITH(save_png(dir.file("taken.png"), pattern(1, 2, 2, 1)), Contains("taken.png") && Contains("rename"));
  CHECK(dir.entries() == std::vector<std::string>{"samples.png", "taken.png"});
  std::string missing = dir.file("no/dir/out.png");
  CHECK_THROWS_WITH(save_png(missing, pattern(1, 2, 2, 1)), Contains(missing));
}

TEST_CASE("the image reader names the file it cannot read", "[image_io]") {
  TempDir dir;
  CHECK_THROWS_WITH(read_image(dir.file("none.png")), Contains(dir.file("none.png")));
  write_bytes(dir.file("junk.png"), "definitely not a png");
  CHECK_THROWS_WITH(read_image(dir.file("junk.png")), Contains(dir.file("junk.png")) && Contains("the name says PNG"));
  write_bytes(dir.file("junk.png"), "\x89PNG\r\n\x1a\n then not a PNG");  // the right magic, then junk
  CHECK_THROWS_WITH(read_image(dir.file("junk.png")), Contains(dir.file("junk.png")) && Contains("cannot decode"));
  save_png(dir.file("cut.png"), pattern(1, 16, 16, 3));
  std::string bytes = slurp(dir.file("cut.png"));
  write_bytes(dir.file("cut.png"), bytes.substr(0, bytes.size() / 2));
  CHECK_THROWS_WITH(read_image(dir.file("cut.png")), Contains(dir.file("cut.png")));
}
