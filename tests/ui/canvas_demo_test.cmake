# ctest "ui: canvas demo renders under xvfb" (cmake -P): render gearlab_canvas_demo in a virtual X
# server, screenshot the canvas and the window, then check both PNGs with png_check. Any step
# failing fails the test. Inputs: -D XVFB_RUN= -D DEMO= -D PNG_CHECK= -D PNG=
function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (exit ${rc})")
  endif()
endfunction()

string(REGEX REPLACE "\\.png$" "-window.png" window_png "${PNG}")
file(REMOVE "${PNG}" "${window_png}")
# 30 frames, and no allocation (operator new) while drawing the last 15 of them.
step("gearlab_canvas_demo under xvfb-run" ${XVFB_RUN} -a -s "-screen 0 1600x1000x24"
     ${DEMO} --screenshot ${PNG} --size 1440x900 --frames 30 --check-steady-alloc)
step("png_check of the canvas" ${PNG_CHECK} ${PNG} --min-size 1200x700 --min-colors 200)  # less the status bar
step("png_check of the window" ${PNG_CHECK} ${window_png} --size 1440x900 --min-colors 200)
