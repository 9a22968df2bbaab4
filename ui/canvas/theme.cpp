#include "canvas/theme.h"

namespace gear::ui {

void apply_dark_theme(ImGuiStyle& style) {
  ImGui::StyleColorsDark(&style);
  style.WindowRounding = 6;
  style.ChildRounding = 5;
  style.FrameRounding = 4;
  style.PopupRounding = 5;
  style.GrabRounding = 4;
  style.TabRounding = 4;
  style.WindowBorderSize = 1;
  style.ChildBorderSize = 1;
  style.WindowPadding = ImVec2(10, 10);
  style.FramePadding = ImVec2(8, 4);
  style.ItemSpacing = ImVec2(10, 7);
  style.ItemInnerSpacing = ImVec2(6, 4);
  style.ScrollbarSize = 12;

  // Near-black panels, a calm blue accent, text slightly off-white.
  ImVec4* c = style.Colors;
  const ImVec4 accent(0.26f, 0.55f, 0.86f, 1.0f);
  c[ImGuiCol_Text] = ImVec4(0.90f, 0.91f, 0.94f, 1.0f);
  c[ImGuiCol_TextDisabled] = ImVec4(0.55f, 0.57f, 0.62f, 1.0f);
  c[ImGuiCol_WindowBg] = ImVec4(0.105f, 0.11f, 0.13f, 1.0f);
  c[ImGuiCol_ChildBg] = ImVec4(0.125f, 0.13f, 0.155f, 1.0f);
  c[ImGuiCol_PopupBg] = ImVec4(0.10f, 0.105f, 0.125f, 0.97f);
  c[ImGuiCol_Border] = ImVec4(0.22f, 0.23f, 0.27f, 1.0f);
  c[ImGuiCol_FrameBg] = ImVec4(0.17f, 0.18f, 0.21f, 1.0f);
  c[ImGuiCol_FrameBgHovered] = ImVec4(0.22f, 0.24f, 0.28f, 1.0f);
  c[ImGuiCol_FrameBgActive] = ImVec4(0.25f, 0.28f, 0.33f, 1.0f);
  c[ImGuiCol_TitleBg] = ImVec4(0.09f, 0.095f, 0.11f, 1.0f);
  c[ImGuiCol_TitleBgActive] = ImVec4(0.12f, 0.14f, 0.18f, 1.0f);
  c[ImGuiCol_MenuBarBg] = ImVec4(0.12f, 0.125f, 0.145f, 1.0f);
  c[ImGuiCol_CheckMark] = accent;
  c[ImGuiCol_SliderGrab] = accent;
  c[ImGuiCol_SliderGrabActive] = ImVec4(0.36f, 0.65f, 0.95f, 1.0f);
  c[ImGuiCol_Button] = ImVec4(0.19f, 0.21f, 0.25f, 1.0f);
  c[ImGuiCol_ButtonHovered] = ImVec4(0.24f, 0.36f, 0.52f, 1.0f);
  c[ImGuiCol_ButtonActive] = accent;
  c[ImGuiCol_Header] = ImVec4(0.20f, 0.30f, 0.44f, 1.0f);
  c[ImGuiCol_HeaderHovered] = ImVec4(0.24f, 0.36f, 0.52f, 1.0f);
  c[ImGuiCol_HeaderActive] = accent;
  c[ImGuiCol_Tab] = ImVec4(0.15f, 0.16f, 0.19f, 1.0f);
  c[ImGuiCol_TabHovered] = ImVec4(0.24f, 0.36f, 0.52f, 1.0f);
  c[ImGuiCol_TabActive] = ImVec4(0.20f, 0.32f, 0.48f, 1.0f);
  c[ImGuiCol_TabUnfocused] = c[ImGuiCol_Tab];
  c[ImGuiCol_TabUnfocusedActive] = c[ImGuiCol_TabActive];
  c[ImGuiCol_Separator] = c[ImGuiCol_Border];
}

}  // namespace gear::ui
