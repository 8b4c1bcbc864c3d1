root 3467
attached 1
stopped 0
lost ev 0 0
lost ev 1 0
lost obj 0 0
lost obj 1 0
