// The report page's style sheet and script (engine/report.h), kept apart from the C++ that writes
// the page so that each reads as what it is. Both are inlined in every report.html: the page must
// open offline, from a file, with nothing else beside it but the sample grids.
#pragma once

namespace diffuse::report_assets {

extern const char* const kStyle;
// In <head>: diffuseMark(img), called by each <img>'s onload/onerror, records in data-loaded
// whether the image decoded (naturalWidth > 0) and counts loaded images in <body data-images-loaded>.
extern const char* const kHeadScript;
// At the end of <body>: hover (step and value of the nearest drawn point), the smoothing slider,
// the log-scale toggle (both remembered across the live reloads) and, while <body data-live="1">,
// a reload every data-reload seconds; then sets <body data-script="ran">.
extern const char* const kBodyScript;

}  // namespace diffuse::report_assets
