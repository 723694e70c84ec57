//! Turns raw YOLO head outputs into labelled boxes: darknet's decode, then NMS.
