// The canvas look: a dark ImGui style with GEAR Lab's accents, the font size, the clear colour.
#pragma once

#include <imgui.h>

namespace gear::ui {

constexpr float kFontSize = 15.0f;  // logical pixels
// The GL clear colour: the same as WindowBg, so a full-canvas ImGui window can skip its
// background (ImGuiWindowFlags_NoBackground) and save one full-screen fill per frame.
constexpr float kCanvasBackground[4] = {0.105f, 0.11f, 0.13f, 1.0f};  // RGBA

void apply_dark_theme(ImGuiStyle& style);

}  // namespace gear::ui
