"""The paper's defaults (section 4) in one place. `SimConfig` and the library's signatures read
them; a run that wants other values passes them as arguments."""

SHAPE = (20, 20)  # camera frame (H, W), px
SIGMA_X = 0.92  # PSF std σ_x, px
I0 = 200.0  # photons per emitter
SIGMA_Y = 3.0  # KDE kernel std σ_y, KDE px (the paper's text; its code used 1.5)
UPSAMPLE = 4  # KDE px per camera px: 80×80 KDEs of 20×20 frames
COUNT = 10  # emitters per frame (the paper's code)
RADIUS = 7.0  # emitters uniform on a disc of this radius (px) at the frame centre
PIXEL_NM = 108.0  # camera pixel, nm
KDE_PIXEL_NM = PIXEL_NM / UPSAMPLE  # 27 nm
