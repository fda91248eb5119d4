fn placeholder(){}
